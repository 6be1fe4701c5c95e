"""Training: the self-challenging loop (``python -m train``) over LoRA policy-gradient updates.

- :mod:`train.config`: the one config dataclass, loaded from YAML (``train/configs/``) and the command line;
- :mod:`train.run`: the loop over the stages, top to bottom, and each run's report;
- :mod:`train.challenger`: the challenger learns to write tasks, and writes the run's pool;
- :mod:`train.trainer`: the executor's stages (held-out score, warm start, RL) and the update;
- :mod:`train.tasks`: scripted tasks, given pools, which tasks a run keeps, the split;
- :mod:`train.demos`: example solutions, scripted tasks and other models' transcripts as the policy's own episodes;
- :mod:`train.scoring`: log-probabilities of the policy's tokens, the shared prompt encoded once;
- :mod:`train.losses`: advantages, per-token losses and the algorithms by name;
- :mod:`train.rundir`: run folder and checkpoints;
- :mod:`train.compare`: training sets compared on one held-out set (filtered, unfiltered, scripted).
"""
