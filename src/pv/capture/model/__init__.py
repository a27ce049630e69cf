"""Models as pv reads them: the family table, ModelConfig, and loading from synthetic seeds,
Hugging Face directories and GGUF files into one ``LoadedModel`` every runner builds from.
"""
