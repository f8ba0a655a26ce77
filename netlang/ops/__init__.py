"""The primitive operations: the registry (registry.py) and one module per op family.

Importing the package imports every family, and importing a family registers its ops, so
`registry.get` and `registry.all_ops` always see the whole list. A new family is one module here
and one name below.
"""
from netlang.ops import (  # noqa: F401
                         conv,
                         elementwise,
                         leaves,
                         linalg,
                         losses,
                         normalization,
                         pooling,
                         reductions,
                         registry,  # noqa: F401  (first: the families register into it)
                         rnn,
                         roi,
                         sequence,
                         shape_ops,
                         softmax,
                         sparse,
                         stats,
                         trace,
)
