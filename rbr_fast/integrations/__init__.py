"""Adapters that plug the RBR reward into existing trainers (import the one you need:
``rbr_fast.integrations.trl``)."""
