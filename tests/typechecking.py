"""The test suite's run-time type checker (installed by ``tests/conftest.py``).

Every call into ``hooks`` and ``mechmem`` made by a test checks its arguments and return value
against the annotations: jaxtyping checks the shapes and dtypes (``Float[Tensor, "batch pos
d_model"]``, dimension names bound consistently across one call), beartype everything else, as
TransformerLens's own tests do. ``int`` is accepted where ``float`` is annotated (PEP 484's
numeric tower). Set ``MECHMEM_TYPECHECK=0`` to run the tests without it.
"""

from beartype import BeartypeConf, beartype

checker = beartype(conf=BeartypeConf(is_pep484_tower=True))
