"""The model core: configs (``config``), model builders (``models``), the training loop (``training``) and its fused
forward (``fastpath``), the resumable checkpoint (``checkpoint``) and torch's thread count (``threads``)."""
