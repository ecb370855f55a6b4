"""The studies: one module each, registered in `odenets.study.study` (see odenets/study.py).

`odenets run experiment=<name>` runs one; `experiment=all_studies` runs them all and writes an index.
"""
