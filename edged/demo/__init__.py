"""The demo's sample videos (`edged make-sample`) and their ground truth."""
