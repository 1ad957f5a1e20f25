"""A camera's chain over the model servers: stages, filters, tracker, motion gating, dispatch and delivery."""
