"""Detectron2 transfer: export, configs, datasets, train_net.  Only train_net imports Detectron2."""
