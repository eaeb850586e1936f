import math

import torch

from pretrain.mi_gaussian import SETTINGS, critic, run, true_mi


def test_critic_is_the_log_density_ratio():
    # E over the joint of the optimal critic equals the mutual information
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200_000, 3, generator=g)
    y = 0.6 * x + math.sqrt(1 - 0.36) * torch.randn(200_000, 3, generator=g)
    assert abs(critic(x, y, 0.6).mean().item() - true_mi(3, 0.6)) < 0.01


def test_every_estimator_is_a_lower_bound_and_ring_is_below_nce():
    df = run(dim=2, rho=0.5, ks=[16], trials=100, batch=32, pool=512, seed=3)
    truth = true_mi(2, 0.5)
    assert set(df.estimator) == set(SETTINGS)
    for _, row in df.iterrows():
        if "tau+=0.1" not in row["estimator"]:  # the debiased forms with tau+ > 0 are not bounds
            assert row["mean"] <= truth + 3 * row["se"], row.to_dict()  # a lower bound, within Monte-Carlo error
    means = dict(zip(df.estimator, df["mean"]))
    # conditional (harder) negatives give a looser bound: CNCE <= NCE
    assert means["Ring o=0.1 i=0.1"] < means["NCE"] and means["Ball o=0.1"] < means["NCE"]
    # debiasing removes positive mass the independent negatives never had: above NCE; reweighting toward the
    # hard negatives (a weighted mean of e^f above the plain one) lowers the estimate below NCE
    assert means["DCL tau+=0.1"] > means["NCE"] and means["HCL beta=1 tau+=0"] < means["NCE"]
