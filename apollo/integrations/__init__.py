"""Apollo inside other libraries' interfaces: the ``apollo://`` fsspec filesystem (``apollo.integrations.fsspec``).

Integrations are front doors, like the S3 gateway: they use the native client (``apollo.client``) and
the shared records only, never the metadata or storage internals (``tests/test_tidy.py``).
"""
