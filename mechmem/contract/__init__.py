"""The contract every paper reproduction follows: presets, experiments and the one runner (``reproducing``),
claims declared as data (``claims``) and the names of tasks, papers and paper commands (``registry``)."""
