namespace FluxNative;

/// <summary>
/// The timestep schedule of FLUX sampling (docs/flux-model.md §6.1): <c>steps + 1</c> values from 1 (pure noise)
/// down to 0 (the image). [dev] shifts it towards 1 by an amount that grows with the image-token count
/// (more tokens need more time at high noise); [schnell] uses the plain linear spacing.
/// </summary>
public static class FluxSchedule
{
    /// <summary>mu at 256 image tokens (256×256 pixels).</summary>
    public const double BaseShift = 0.5;

    /// <summary>mu at 4096 image tokens (1024×1024 pixels); mu extrapolates beyond, unclamped (as BFL and diffusers).</summary>
    public const double MaxShift = 1.15;

    private const double BaseTokens = 256, MaxTokens = 4096;

    /// <summary>The shift parameter for <paramref name="imageTokens"/> packed image tokens: the line through (256, 0.5) and (4096, 1.15).</summary>
    public static double Mu(int imageTokens)
    {
        const double slope = (MaxShift - BaseShift) / (MaxTokens - BaseTokens);
        const double intercept = BaseShift - slope * BaseTokens;
        return slope * imageTokens + intercept;
    }

    /// <summary>
    /// The schedule t₀ = 1 &gt; t₁ &gt; … &gt; t_steps = 0, computed in double precision.
    /// With <paramref name="shift"/>, each linear value t becomes e^mu / (e^mu + (1/t − 1)).
    /// </summary>
    /// <param name="steps">Number of denoising steps (1 or more).</param>
    /// <param name="imageTokens">Packed image-token count, (height/16)·(width/16) for the published autoencoder.</param>
    /// <param name="shift">True for [dev] (guidance-distilled, resolution-dependent shift), false for [schnell].</param>
    public static double[] Timesteps(int steps, int imageTokens, bool shift)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(steps, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(imageTokens, 1);
        double expMu = Math.Exp(Mu(imageTokens));
        var t = new double[steps + 1];
        for (int i = 0; i <= steps; i++)
        {
            double linear = 1.0 - (double)i / steps;
            // Endpoints stay exactly 1 and 0 (at 0 the formula's 1/t is infinite).
            t[i] = !shift || linear == 0.0 || linear == 1.0 ? linear : expMu / (expMu + (1.0 / linear - 1.0));
        }

        return t;
    }
}
