"""Student training: the experiment config, the training inputs and the frozen-encoder cache,
the distillation losses, checkpoints and the training loop.

Public face: ``ExperimentConfig``/``load_experiment_config`` (experiment), ``DistillConfig``/
``DistillationLoss`` (losses), ``train_student``/``run`` (train).
"""
