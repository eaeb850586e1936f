"""The pretraining engine: the trainer and its ``build_*`` seams (trainer.py), the loop's hooks (hooks.py),
checkpoints (checkpoint.py), seeding (seeding.py), learning-rate schedules (lr_schedules.py) and optimizers
(optimizers.py).

Nothing is imported here: data and evaluation modules use ``engine.seeding`` and ``engine.hooks`` without
loading the trainer (which imports them)."""
