"""有条件共享: each conditional subscription's view, on a topic of its department's own."""
