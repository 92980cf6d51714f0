"""SNLI-VE (visual entailment): a Flickr30k image and a hypothesis -> entailment, neutral or
contradiction."""
