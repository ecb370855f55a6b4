"""Scripts and harnesses that use odenets from a source checkout (not part of the installed package)."""
