"""Hot tensor ops: each a plain torch reference plus, where it pays, a Triton kernel.

The package name is also the import name of Hugging Face's `kernels` hub package, which
transformers probes for; `tests/test_policy.py` checks that ours never passes for it (our
distribution is `swarmrl`, whose version is outside the range transformers accepts).
"""
