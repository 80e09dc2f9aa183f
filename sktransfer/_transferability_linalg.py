"""The linear algebra of the embedding scores: one singular value decomposition, LogME's evidence, Ledoit-Wolf
shrinkage, principal coordinates and the Bhattacharyya overlap of Gaussians.

Everything runs in float64, every class at once, on the singular values of the features and the targets'
coordinates along the left singular vectors; no matrix is ever inverted.
"""

import numpy as np
from scipy import linalg

# LogME's maximisation over log(alpha / beta): a grid of this step, then golden-section steps around its best
# point; the ratio stays within [1e-12 times the smallest, 1e12 times the largest] eigenvalue of F^T F, beyond
# which the evidence no longer changes in double precision.
LOGME_GRID_STEP = 0.5
LOGME_GOLDEN_STEPS = 50
LOGME_RIDGE_RANGE = 1e12
_INVERSE_GOLDEN_RATIO = (np.sqrt(5) - 1) / 2


def spectral_projections(features, targets, noise=0.0):
    """The non-zero eigenvalues sigma of F^T F, the squared coordinates of ``targets`` along the matching
    left singular vectors of F (one column per target), and the squared norm of what they leave out.

    From one thin SVD of F: its left singular vectors span every direction of the targets' space when
    n_samples <= n_features, so that what the kept ones leave out is summed from the others' coordinates;
    otherwise it is what remains of the targets' norm. Singular values below max(n, d) * eps of the largest,
    or below ``noise`` (:func:`~sktransfer._transferability_inputs.rounding_noise`), are rounding noise:
    their directions count as left out.
    """
    singular, left, keep = _thin_svd(features, noise)
    coordinates = left.T @ targets
    projected2 = coordinates[keep] ** 2
    if left.shape[1] == len(features):  # a whole basis of the targets' space
        left_out = np.sum(coordinates[~keep] ** 2, axis=0)
    else:
        left_out = np.maximum(np.sum(targets**2, axis=0) - projected2.sum(axis=0), 0)
    return singular[keep] ** 2, projected2, left_out


def log_evidence(sigma, projected2, left_out, n_samples):
    """Maximum over alpha and beta of LogME's log evidence per sample, for each target column.

    ``n_samples`` is the dimension of the targets' space: the number of rows, or one fewer when an intercept
    has been integrated out (features and targets centred).

    With z_i the coordinate of y along the i-th left singular vector of F, sigma_i = s_i^2 and the ridge
    lambda = alpha / beta, the evidence of y = F w + noise, w ~ N(0, I / alpha), noise ~ N(0, I / beta), is

        n/2 log(beta / 2 pi) - beta/2 E(lambda) - 1/2 sum_i log(1 + sigma_i / lambda),
        E(lambda) = ||F m - y||^2 + lambda ||m||^2 = sum_i lambda z_i^2 / (lambda + sigma_i) + (y left out),

    the directions of sigma = 0 cancelling out of d/2 log(alpha) - 1/2 log|alpha I + beta F^T F|. For a
    given lambda the best beta is n / E(lambda), which leaves a function of log(lambda) alone: it is
    maximised on a grid, then by golden-section search around the grid's best point, every class at once.
    This reaches the fixed point of MacKay's updates that You et al. iterate, and also the maxima at the
    edge (beta -> infinity when the features interpolate a class, as whenever n_samples <= n_features; alpha
    -> infinity for a class that they do not explain), towards which those updates crawl for hundreds of
    steps.
    """
    n_classes = projected2.shape[1]
    sigma = sigma[:, None] / sigma.max() if len(sigma) else sigma[:, None]  # LogME is scale-invariant

    def evidence(log_ridge):
        ridge = np.exp(log_ridge)
        error = np.sum(ridge / (ridge + sigma) * projected2, axis=0) + left_out
        complexity = np.sum(np.log1p(sigma / ridge), axis=0)
        return -(np.log(2 * np.pi * error / n_samples) + 1) / 2 - complexity / (2 * n_samples)

    lowest = np.log(sigma.min() / LOGME_RIDGE_RANGE) if len(sigma) else 0.0
    grid = np.arange(lowest, np.log(LOGME_RIDGE_RANGE) + LOGME_GRID_STEP, LOGME_GRID_STEP)
    best = np.stack([evidence(np.full(n_classes, point)) for point in grid]).argmax(axis=0)
    low, high = grid[np.maximum(best - 1, 0)], grid[np.minimum(best + 1, len(grid) - 1)]
    inner_low = high - _INVERSE_GOLDEN_RATIO * (high - low)
    inner_high = low + _INVERSE_GOLDEN_RATIO * (high - low)
    value_low, value_high = evidence(inner_low), evidence(inner_high)
    for _ in range(LOGME_GOLDEN_STEPS):
        upper = value_high > value_low  # the maximum lies in [inner_low, high], else in [low, inner_high]
        low = np.where(upper, inner_low, low)
        high = np.where(upper, high, inner_high)
        kept, kept_value = np.where(upper, inner_high, inner_low), np.where(upper, value_high, value_low)
        new = np.where(
            upper, low + _INVERSE_GOLDEN_RATIO * (high - low), high - _INVERSE_GOLDEN_RATIO * (high - low)
        )
        new_value = evidence(new)
        inner_low, value_low = np.where(upper, kept, new), np.where(upper, kept_value, new_value)
        inner_high, value_high = np.where(upper, new, kept), np.where(upper, new_value, kept_value)
    return np.maximum(value_low, value_high)


def ledoit_wolf_shrinkage(centred, sigma):
    """The shrinkage of sklearn's ``ledoit_wolf_shrinkage`` from the eigenvalues of F^T F, in O(n d).

    ``sum_i ||x_i x_i^T - S||^2`` is ``sum_i ||x_i||^4 - n ||S||^2``, and ``||S||^2 = sum(sigma^2) / n^2``.
    """
    n_samples, n_features = centred.shape
    covariance_norm2 = np.sum(sigma**2) / n_samples**2
    mean_variance = np.sum(centred**2) / (n_samples * n_features)
    spread = (np.sum(np.sum(centred**2, axis=1) ** 2) / n_samples - covariance_norm2) / (
        n_features * n_samples
    )
    distance = (covariance_norm2 - n_features * mean_variance**2) / n_features
    # 0 for one feature, or for an isotropic covariance (whitened features), but a difference of rounding
    # errors there, whose sign would choose between no shrinkage and full (which leaves nothing to score)
    rounding = max(n_samples, n_features) * np.finfo(np.float64).eps * covariance_norm2 / n_features
    return 0.0 if n_features == 1 or distance <= rounding else min(spread, distance) / distance


def principal_coordinates(centred, n_components, noise=0.0):
    """The rows' coordinates along the ``n_components`` leading principal axes of centred features (PCA).

    ``U_k diag(s_k)`` from the thin SVD of the features. Directions of rounding-noise variance (as
    :func:`spectral_projections` tells them) are left out, so that there may be fewer columns than asked
    for (none for constant features).
    ``n_components=None`` keeps every direction of non-zero variance.
    """
    singular, left, keep = _thin_svd(centred, noise)
    leading = np.flatnonzero(keep)[:n_components]  # the SVD sorts them largest first
    return left[:, leading] * singular[leading]


def bhattacharyya_overlap(means, variances):
    """The sum over ordered pairs of distinct Gaussians of their Bhattacharyya coefficient ``exp(-D_B)``.

    Gaussians of the given ``means`` and diagonal covariances ``variances`` (both n_gaussians x d, variances
    positive); ``D_B = 1/8 sum (m_i - m_j)^2 / v + 1/2 sum (log v - (log v_i + log v_j) / 2)`` with
    ``v = (v_i + v_j) / 2``. One Gaussian against all the others at a time: memory of n_gaussians x d.
    """
    log_variances = np.log(variances)
    overlap = 0.0
    for mean, variance, log_variance in zip(means, variances, log_variances, strict=True):
        pooled = (variance + variances) / 2
        distance = (
            np.sum((mean - means) ** 2 / pooled, axis=1) / 8
            + np.sum(np.log(pooled) - (log_variance + log_variances) / 2, axis=1) / 2
        )
        overlap += np.sum(np.exp(-distance)) - 1.0  # the Gaussian against itself: distance 0
    return overlap


def _thin_svd(features, noise):
    """Singular values (largest first) and left singular vectors of F, and which singular values are not
    rounding noise: below max(n, d) * eps times the largest (the SVD's own), or below ``noise``.

    From F itself, not from its Gram matrix F^T F, whose eigenvalues (the squares) lose to rounding the
    directions of singular values some 1e7 below the largest: features whose columns differ that much in
    scale would lose their small but real directions.
    """
    try:
        left, singular, _ = linalg.svd(features, full_matrices=False, check_finite=False)
    except linalg.LinAlgError:  # divide and conquer did not converge: the slower, steadier QR iteration
        left, singular, _ = linalg.svd(
            features, full_matrices=False, check_finite=False, lapack_driver="gesvd"
        )
    largest = singular[0] if len(singular) else 0.0
    keep = singular > max(largest * max(features.shape) * np.finfo(np.float64).eps, noise)
    return singular, left, keep
