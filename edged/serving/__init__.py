"""Model serving: one `ModelServer` per loaded model, the only caller of its engine, batching the
requests of every camera into a fixed, declared set of input shapes (edged.serving.shapes)."""
