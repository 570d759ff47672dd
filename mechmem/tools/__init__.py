"""Tools that stand beside the paper reproductions: each a subpackage with its own command (declared by name in
``mechmem.contract.registry.COMMANDS``). ``hijack``: context hijacking of a language model (``mechmem hijack``)."""
