"""The LLM side: loading the policy model (:mod:`agents.models`), what it is shown
(:mod:`agents.prompting`), and batched multi-turn rollouts with exact token ids
(:mod:`agents.rollout`). Depends on ``envs`` only for the environment API."""
