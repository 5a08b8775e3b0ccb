"""Full posteriors beyond moment networks: a conditional normalizing flow p(theta | s) fitted on the
network's outputs s (its means and log standard deviations, or its means alone) as learned summaries.

Neural posterior estimation on a learned compression: the trained network maps each crop to s; a zuko
neural spline flow (Durkan et al. 2019) is fitted by maximum likelihood on (s, theta) pairs of crops of
the training simulations, stopped early on those of the validation simulations, and sampled on the test
crops. Parameters and summaries are standardised with their training mean and standard deviation before
the flow sees them, and samples are mapped back to physical units.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch


class FlowPosterior:
    """p(theta | s) with ``zuko.flows.NSF``; ``fit`` then ``sample``. Shapes: s (n, F), theta (n, P)."""

    def __init__(
        self,
        n_parameters: int,
        n_summaries: int,
        transforms: int = 3,
        hidden: Sequence[int] = (64, 64),
        seed: int = 0,
    ):
        import zuko

        torch.manual_seed(seed)
        self.seed = seed
        self.flow = zuko.flows.NSF(
            features=n_parameters, context=n_summaries, transforms=transforms, hidden_features=list(hidden)
        )
        self.theta_shift = self.theta_scale = self.s_shift = self.s_scale = None
        self.history: list[tuple[float, float]] = []

    def _standardise(self, s: np.ndarray, theta: np.ndarray | None = None):
        s = torch.as_tensor((s - self.s_shift) / self.s_scale, dtype=torch.float32)
        if theta is None:
            return s
        return s, torch.as_tensor((theta - self.theta_shift) / self.theta_scale, dtype=torch.float32)

    def fit(
        self,
        s_train: np.ndarray,
        theta_train: np.ndarray,
        s_val: np.ndarray,
        theta_val: np.ndarray,
        *,
        epochs: int = 200,
        batch_size: int = 128,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        patience: int = 30,
    ) -> FlowPosterior:
        """Maximum likelihood with AdamW; keeps the state of the best validation loss."""
        s_train, theta_train = np.asarray(s_train, np.float64), np.asarray(theta_train, np.float64)
        self.s_shift, self.s_scale = s_train.mean(0), s_train.std(0) + 1e-12
        self.theta_shift, self.theta_scale = theta_train.mean(0), theta_train.std(0) + 1e-12
        s_tr, t_tr = self._standardise(s_train, theta_train)
        s_va, t_va = self._standardise(np.asarray(s_val, np.float64), np.asarray(theta_val, np.float64))
        optimiser = torch.optim.AdamW(self.flow.parameters(), lr=lr, weight_decay=weight_decay)
        generator = torch.Generator().manual_seed(self.seed)
        best, best_state, waited = np.inf, copy.deepcopy(self.flow.state_dict()), 0
        for _ in range(epochs):
            self.flow.train()
            order = torch.randperm(len(s_tr), generator=generator)
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                loss = -self.flow(s_tr[idx]).log_prob(t_tr[idx]).mean()
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
            self.flow.eval()
            with torch.no_grad():
                train_loss = -self.flow(s_tr).log_prob(t_tr).mean().item()
                val_loss = -self.flow(s_va).log_prob(t_va).mean().item()
            self.history.append((train_loss, val_loss))
            if val_loss < best:
                best, best_state, waited = val_loss, copy.deepcopy(self.flow.state_dict()), 0
            else:
                waited += 1
                if waited >= patience:
                    break
        self.flow.load_state_dict(best_state)
        self.flow.eval()
        return self

    @torch.no_grad()
    def sample(self, s: np.ndarray, n_samples: int = 1000) -> np.ndarray:
        """(S, n, P) posterior samples in the parameters' physical units."""
        torch.manual_seed(self.seed)
        draws = self.flow(self._standardise(np.asarray(s, np.float64))).sample((n_samples,))
        return draws.double().numpy() * self.theta_scale + self.theta_shift


def network_summaries(mean: np.ndarray, std: np.ndarray | None) -> np.ndarray:
    """The flow's conditioning vector per crop: the network's means, and log standard deviations if any."""
    return mean if std is None else np.concatenate([mean, np.log(std)], axis=1)
