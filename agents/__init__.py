"""The LLM side: loading the policy model (:mod:`agents.models`), what it is shown
(:mod:`agents.prompting`), and batched multi-turn rollouts with exact token ids
(:mod:`agents.rollout`) over a KV cache of growing chats
(:mod:`agents.kvcache`). Depends on ``envs`` only for the environment API."""
