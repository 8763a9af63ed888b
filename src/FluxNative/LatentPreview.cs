namespace FluxNative;

/// <summary>
/// A cheap latent-to-RGB projection for previews while denoising: every latent pixel's channels (16 for FLUX) map to
/// RGB through one fixed matrix and bias, <c>rgb = W·z + b</c> (<c>W</c> is 3 × channels), at the latent resolution.
/// It costs 16 multiply-adds a channel per latent pixel, against the autoencoder's billions: a rough picture of where
/// the image is going, never the image.
/// </summary>
/// <remarks>
/// <para>Where the numbers come from (<see cref="Fit"/>): this autoencoder's own encoder. A mosaic of the 64 colours
/// of the 4-level RGB cube (0, 85, 170, 255 per channel), 8 × 8 flat patches of 4 × 4 latent cells each, is encoded
/// once; each patch's latent is the mean of its 2 × 2 inner cells (away from the edges its neighbours bleed into),
/// and <c>W</c>, <c>b</c> are the least-squares fit (lightly ridge-regularised) of the patches' colours, in the
/// model's [−1, 1] pixel range, on those latents. It is a fit, not a derivation: the decoder is not linear, and the
/// latents of a half-denoised image are not those of a finished one. <see cref="FitError"/> says how well it fits
/// its own patches. With the published FLUX autoencoder it is fitted the same way on first use (a 256 × 256 encode);
/// no coefficients are shipped, so a fine-tuned autoencoder gets its own.</para>
/// <para>An autoencoder without an encoder gets <see cref="GreyMean"/>: the mean of the channels as a grey level,
/// which is a placeholder, not a projection anyone fitted.</para>
/// </remarks>
public sealed class LatentPreview
{
    /// <summary>Levels of each RGB channel in the fitting mosaic (4³ = 64 colours).</summary>
    public const int Levels = 4;

    /// <summary>Patches a side of the fitting mosaic (8 × 8 = 64 patches, one per colour).</summary>
    public const int Grid = 8;

    /// <summary>Latent cells a side of one mosaic patch.</summary>
    public const int PatchCells = 4;

    private readonly float[] weights;
    private readonly float[] bias;

    /// <summary>A projection with the given coefficients.</summary>
    /// <param name="weights">Row-major <c>[3, channels]</c>: row 0 gives red, 1 green, 2 blue, in the model's [−1, 1] range.</param>
    /// <param name="bias">The three offsets.</param>
    /// <param name="method">How the coefficients were made, in words.</param>
    /// <param name="fitError">The RMS error of the fit on its own data, in 8-bit levels; NaN when nothing was fitted.</param>
    public LatentPreview(float[] weights, float[] bias, string method, double fitError = double.NaN)
    {
        ArgumentNullException.ThrowIfNull(weights);
        ArgumentNullException.ThrowIfNull(bias);
        ArgumentException.ThrowIfNullOrEmpty(method);
        if (weights.Length == 0 || weights.Length % 3 != 0 || bias.Length != 3)
        {
            throw new ArgumentException($"Expected weights [3, channels] and 3 biases (got {weights.Length} weights, {bias.Length} biases).");
        }

        this.weights = weights;
        this.bias = bias;
        Method = method;
        FitError = fitError;
    }

    /// <summary>Latent channels the projection reads.</summary>
    public int Channels => weights.Length / 3;

    /// <summary>Row-major <c>[3, Channels]</c>.</summary>
    public IReadOnlyList<float> Weights => weights;

    /// <summary>The red, green and blue offsets.</summary>
    public IReadOnlyList<float> Bias => bias;

    /// <summary>How the coefficients were made.</summary>
    public string Method { get; }

    /// <summary>RMS error of the fit on its own colour patches, in 8-bit levels (0–255); NaN when nothing was fitted.</summary>
    public double FitError { get; }

    /// <summary>The projection for <paramref name="autoencoder"/>: <see cref="Fit"/> when it has an encoder, else <see cref="GreyMean"/>.</summary>
    public static LatentPreview For(Autoencoder autoencoder, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(autoencoder);
        return autoencoder.Config.HasEncoder ? Fit(autoencoder, cancellationToken) : GreyMean(autoencoder.Config.ZChannels);
    }

    /// <summary>The grey-scale mean of the channels: the fallback when no projection can be fitted.</summary>
    public static LatentPreview GreyMean(int channels)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(channels, 1);
        var w = new float[3 * channels];
        Array.Fill(w, 1f / channels);
        return new LatentPreview(w, new float[3], "grey-scale mean of the latent channels (the autoencoder has no encoder to fit a projection with)");
    }

    /// <summary>Fits the projection to <paramref name="autoencoder"/>'s encoder on the 64-colour mosaic (see the remarks).</summary>
    public static LatentPreview Fit(Autoencoder autoencoder, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(autoencoder);
        int z = autoencoder.Config.ZChannels, down = autoencoder.Config.Downscale;
        int cells = Grid * PatchCells, side = cells * down, patch = PatchCells * down;
        var rgb = new byte[3 * side * side];
        var colours = new double[Grid * Grid][];
        for (int i = 0; i < colours.Length; i++)
        {
            int r = i / (Levels * Levels), g = i / Levels % Levels, b = i % Levels;
            byte[] c = [(byte)(r * 255 / (Levels - 1)), (byte)(g * 255 / (Levels - 1)), (byte)(b * 255 / (Levels - 1))];
            colours[i] = [(c[0] / 127.5) - 1, (c[1] / 127.5) - 1, (c[2] / 127.5) - 1];
            int top = i / Grid * patch, left = i % Grid * patch;
            for (int y = top; y < top + patch; y++)
            {
                for (int x = left; x < left + patch; x++)
                {
                    c.CopyTo(rgb, 3 * ((y * side) + x));
                }
            }
        }

        float[] latents = autoencoder.Encode(Images.FromRgb8(rgb, side, side), 1, side, side, cancellationToken);
        var features = new double[colours.Length][];
        for (int i = 0; i < colours.Length; i++)
        {
            int top = i / Grid * PatchCells, left = i % Grid * PatchCells;
            var x = new double[z];
            for (int c = 0; c < z; c++)
            {
                for (int y = top + 1; y < top + PatchCells - 1; y++)
                {
                    for (int xx = left + 1; xx < left + PatchCells - 1; xx++)
                    {
                        x[c] += latents[(c * cells * cells) + (y * cells) + xx];
                    }
                }

                x[c] /= (PatchCells - 2) * (PatchCells - 2);
            }

            features[i] = x;
        }

        (float[] w, float[] bias, double rms) = FitLinear(features, colours);
        return new LatentPreview(w, bias,
            $"least-squares fit to this autoencoder's encoder on {colours.Length} flat colour patches (the 4-level RGB cube)", rms * 127.5);
    }

    /// <summary>
    /// Least squares with an intercept: the <c>[outputs, inputs]</c> weights and biases minimising
    /// Σ‖W·x + b − y‖² + λ‖W‖², λ a millionth of the inputs' mean square (enough to keep colinear channels finite,
    /// too little to move a well-posed fit), and the RMS residual over every output.
    /// </summary>
    internal static (float[] Weights, float[] Bias, double Rms) FitLinear(IReadOnlyList<double[]> x, IReadOnlyList<double[]> y)
    {
        int n = x.Count, d = x[0].Length, m = y[0].Length, k = d + 1;
        // Normal equations over [x, 1]: A = XᵀX + λI (the intercept not regularised), B = XᵀY.
        var a = new double[k, k];
        var b = new double[k, m];
        double meanSquare = 0;
        for (int i = 0; i < n; i++)
        {
            for (int p = 0; p < k; p++)
            {
                double xp = p < d ? x[i][p] : 1;
                meanSquare += p < d ? xp * xp : 0;
                for (int q = 0; q < k; q++)
                {
                    a[p, q] += xp * (q < d ? x[i][q] : 1);
                }

                for (int o = 0; o < m; o++)
                {
                    b[p, o] += xp * y[i][o];
                }
            }
        }

        double lambda = 1e-6 * Math.Max(meanSquare / (n * d), 1e-12) * n;
        for (int p = 0; p < d; p++)
        {
            a[p, p] += lambda;
        }

        Solve(a, b);   // b now holds the coefficients, [k, m]
        var weights = new float[m * d];
        var bias = new float[m];
        for (int o = 0; o < m; o++)
        {
            for (int p = 0; p < d; p++)
            {
                weights[(o * d) + p] = (float)b[p, o];
            }

            bias[o] = (float)b[d, o];
        }

        double sum = 0;
        for (int i = 0; i < n; i++)
        {
            for (int o = 0; o < m; o++)
            {
                double predicted = b[d, o];
                for (int p = 0; p < d; p++)
                {
                    predicted += b[p, o] * x[i][p];
                }

                sum += (predicted - y[i][o]) * (predicted - y[i][o]);
            }
        }

        return (weights, bias, Math.Sqrt(sum / (n * m)));
    }

    /// <summary>Gauss–Jordan elimination with partial pivoting: solves A·X = B in place (B becomes X).</summary>
    private static void Solve(double[,] a, double[,] b)
    {
        int k = a.GetLength(0), m = b.GetLength(1);
        for (int col = 0; col < k; col++)
        {
            int pivot = col;
            for (int row = col + 1; row < k; row++)
            {
                if (Math.Abs(a[row, col]) > Math.Abs(a[pivot, col]))
                {
                    pivot = row;
                }
            }

            if (Math.Abs(a[pivot, col]) < 1e-300)
            {
                throw new InvalidOperationException("The preview fit is singular: the encoder's latents do not tell the colours apart.");
            }

            for (int q = 0; q < k; q++)
            {
                (a[col, q], a[pivot, q]) = (a[pivot, q], a[col, q]);
            }

            for (int o = 0; o < m; o++)
            {
                (b[col, o], b[pivot, o]) = (b[pivot, o], b[col, o]);
            }

            for (int row = 0; row < k; row++)
            {
                if (row == col)
                {
                    continue;
                }

                double f = a[row, col] / a[col, col];
                for (int q = col; q < k; q++)
                {
                    a[row, q] -= f * a[col, q];
                }

                for (int o = 0; o < m; o++)
                {
                    b[row, o] -= f * b[col, o];
                }
            }
        }

        for (int row = 0; row < k; row++)
        {
            for (int o = 0; o < m; o++)
            {
                b[row, o] /= a[row, row];
            }
        }
    }

    /// <summary>Projects latents <c>[Channels, height, width]</c> to an RGB picture of <paramref name="width"/> × <paramref name="height"/>.</summary>
    public RgbImage Render(ReadOnlySpan<float> latents, int height, int width)
    {
        int z = Channels, plane = height * width;
        if (height < 1 || width < 1 || latents.Length != z * plane)
        {
            throw new ArgumentException($"Expected latents [{z}, {height}, {width}] ({z * plane} values), got {latents.Length}.", nameof(latents));
        }

        var rgb = new byte[3 * plane];
        for (int o = 0; o < 3; o++)
        {
            // One output channel at a time, channel-major over the planes: sequential reads, vectorisable adds.
            var sum = new float[plane];
            Array.Fill(sum, bias[o]);
            for (int c = 0; c < z; c++)
            {
                float w = weights[(o * z) + c];
                ReadOnlySpan<float> channel = latents.Slice(c * plane, plane);
                for (int p = 0; p < plane; p++)
                {
                    sum[p] += w * channel[p];
                }
            }

            for (int p = 0; p < plane; p++)
            {
                float v = Math.Clamp(sum[p], -1f, 1f);
                rgb[(3 * p) + o] = (byte)MathF.Round(127.5f * (v + 1f));
            }
        }

        return new RgbImage(width, height, rgb);
    }
}
