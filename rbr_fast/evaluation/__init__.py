"""Evaluations, each on rows no head or weight was fitted on: the grader's accuracy against human
labels (``grader``), response-type inference on held-out prompts (``response_types``), the RBR reward
on XSTest (``xstest``: ranking, refusal detection, Not-Unsafe / Not-Overrefuse) and a PPO run's
before/after judge (``policy``). The commands and the PPO loop call them; the scores themselves are
``rbr_fast.metrics``. The layer sits above ``reward`` and below ``integrations``, ``bench`` and ``ppo``."""
