CHUNK = 32  # tokens per chunk of the parallel form (changes speed; the result only up to rounding)
CONV_TAPS = 4  # taps of the causal short convolutions on q, k and v
CONV_NOISE = 0.1  # initial deviation of the convolutions from the identity
NORM_EPS = 1e-6  # added to the normaliser sum_s q_t . k_s
OUT_GAIN = 1.0  # scale of the output projection's initial weights


def feature_map(x: torch.Tensor) -> torch.Tensor:
    """phi(x) = elu(x) + 1, positive so that the normaliser is positive (Katharopoulos et al., 2020)."""
    return F.elu(x) + 1.0


class TokenMixer(nn.Module):
    """Plain causal linear attention: short convolutions, phi(q) phi(k)^T v normalised, in chunks."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.heads = num_heads
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.q_conv = nn.Parameter(identity_taps(dim, CONV_TAPS, CONV_NOISE))
        self.k_conv = nn.Parameter(identity_taps(dim, CONV_TAPS, CONV_NOISE))
        self.v_conv = nn.Parameter(identity_taps(dim, CONV_TAPS, CONV_NOISE))
        self.out_proj = nn.Linear(dim, dim, bias=False)
        with torch.no_grad():
            self.out_proj.weight.mul_(OUT_GAIN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = split_heads(feature_map(causal_conv(self.q_proj(x), self.q_conv)), self.heads)
        k = split_heads(feature_map(causal_conv(self.k_proj(x), self.k_conv)), self.heads)
        v = split_heads(causal_conv(self.v_proj(x), self.v_conv), self.heads)
        out = chunked_linear_attention(q, k, v, CHUNK, eps=NORM_EPS)
        return self.out_proj(merge_heads(out))
