"""Training from a config: `fit(cfg, run_dir)` (loop), the config's typed defaults and checks
(config), optimisers (optim), the config groups of `odenets run` (groups), run directories,
metrics and checkpoints; `load_run(run_dir)` (restore) gives a run's trained model back."""

from odenets.train.loop import fit
from odenets.train.restore import Run, load_run

__all__ = ["Run", "fit", "load_run"]
