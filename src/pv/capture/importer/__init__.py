"""``pv import``: tensors another engine dumped (``.npy``, ``.npz``, safetensors), turned into a
capture through a mapping file.
"""
