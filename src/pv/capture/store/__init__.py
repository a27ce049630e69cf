"""The capture file store: APRT files, capture directories and their manifests, generations.

numpy only: comparing captures (``pv diff``, ``pv bisect A B``) reads them through here and never
imports torch.
"""
