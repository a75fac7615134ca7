"""Training: the log-scale schedule rule, models by timm name, the classifier loop."""
