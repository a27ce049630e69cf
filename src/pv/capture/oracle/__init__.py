"""The reference: transformers' own modules for each family, captured through hooks and a
registered attention function.
"""
