"""Training: the self-challenging loop (``python -m train``) over LoRA policy-gradient updates.

- :mod:`train.config`: the one config dataclass, loaded from YAML (``train/configs/``) and the command line;
- :mod:`train.tasks`: the model writes tasks as challenger, scripted challengers top them up, split;
- :mod:`train.demos`: example solutions and other models' transcripts as the policy's own episodes;
- :mod:`train.scoring`: log-probabilities of the policy's tokens, the shared prompt encoded once;
- :mod:`train.losses`: advantages and per-token losses of each algorithm;
- :mod:`train.trainer`: the loop, top to bottom; :mod:`train.rundir`: run folder and checkpoints;
- :mod:`train.plots`: the curves.
"""
