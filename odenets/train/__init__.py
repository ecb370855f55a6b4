"""Training from a config: `fit(cfg, run_dir)` (loop), the config's typed defaults and checks
(config), optimisers (optim), the config groups of `odenets run` (groups), run directories,
metrics and checkpoints."""
