"""World model predictor: robot and object state, action-conditioned prediction, training."""
