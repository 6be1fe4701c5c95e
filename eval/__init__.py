"""Evaluation: how well a policy does on tasks it never trained on.

- :mod:`eval.heldout`: held-out CaTs of our own domains, Pass@1 and Pass@k per domain;
- :mod:`eval.m3tooleval`: the M3ToolEval benchmark, run from a checkout of its upstream code;
- :mod:`eval.taubench`: tau-bench's tasks in our retail and airline envs, with a simulated user, pass^k;
- :mod:`eval.report`: each eval's markdown table and chart, and one page per training run.

Every harness plays through :mod:`agents` (a model as :class:`agents.policy.ModelPolicy`, or any
function from the chat to the next message), so it runs the same with a scripted policy in tests
and with a model (and its LoRA adapter) in real runs; held-out and tau-bench episodes play in
Gymnasium vector envs exactly as training plays them (:func:`agents.rollout.play`).
"""
