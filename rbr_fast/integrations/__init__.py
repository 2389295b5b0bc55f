"""Adapters that plug the RBR reward into existing trainers, and the reward server (import the one
you need): ``trl`` (reward functions for GRPOTrainer / RLOOTrainer), ``verl`` and ``openrlhf``
(reward files those trainers load by path), ``server`` (``rbr-fast serve``), ``ray_serve`` (the
same on Ray Serve). Shared: ``batching`` (the dynamic batcher), ``lazy_reward`` (the picklable
reward recipe), ``pool`` (one pooled grader per process), ``items`` / ``chat_parse`` /
``protocol`` (reading and checking what trainers and clients send), ``client`` (the async client
of a running server)."""
