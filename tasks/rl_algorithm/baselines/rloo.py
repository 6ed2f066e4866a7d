KL_COEF = 0.0  # weight of the KL penalty to the warm-start policy


def compute_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """RLOO: each reward minus the mean of the other samples of its group, not normalised. (P, G) -> (P, G)."""
    return rewards - leave_one_out_mean(rewards)


def policy_loss(batch) -> torch.Tensor:
    """REINFORCE with the leave-one-out baseline: no ratio, no clipping (Ahmadian et al., 2024). With two
    update epochs the second step reuses the samples as if they were on-policy."""
    advantage = per_token(batch.advantages, batch.logp)
    penalty = KL_COEF * kl_k3(batch.logp, batch.ref_logp)
    return sequence_mean(penalty - advantage * batch.logp, batch.mask).mean()
