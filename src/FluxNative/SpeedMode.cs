namespace FluxNative;

/// <summary>
/// How much of the transformer's work a request may reuse between denoising steps (step caching,
/// <see cref="StepCacheOptions"/>). The names are stable: they are what the CLI's <c>--speed-mode</c> and the server's
/// <c>speed_mode</c> accept (<c>lossless</c>, <c>juiced</c>, <c>extra_juiced</c>, <c>fastest</c>).
/// </summary>
/// <remarks>
/// A mode is per request and changes only the caching. Weight precision (BF16, FP8) is chosen when the model is loaded
/// (<see cref="FluxPipelineOptions"/>) and applies to every request alike: no mode changes it. What each mode costs
/// in quality and saves in blocks is measured in <c>benchmarks/results/speed-modes.md</c>.
/// </remarks>
public enum SpeedMode
{
    /// <summary>No caching: every step runs every transformer block (the default).</summary>
    Lossless = 0,

    /// <summary>Cautious caching: a low threshold, the first and last block always run, at most 2 reused steps in a row.</summary>
    Juiced = 1,

    /// <summary>More caching: a higher threshold, only the first block always runs, at most 3 reused steps in a row.</summary>
    ExtraJuiced = 2,

    /// <summary>The most caching: the highest threshold, at most 4 reused steps in a row, one warm-up step.</summary>
    Fastest = 3,
}

/// <summary>
/// Step caching for one request (first-block residual caching, as FBCache and DBCache do): every step runs the first
/// <see cref="HeadBlocks"/> transformer blocks and compares the change they make to the image tokens with that of the
/// last step that ran every block. When the relative L1 change is under <see cref="Threshold"/>, the blocks in the
/// middle are skipped and their change from that step is added instead; the last <see cref="TailBlocks"/> blocks always
/// run. The first <see cref="WarmupSteps"/> and the last <see cref="FinalSteps"/> steps always run every block, and at
/// most <see cref="MaxConsecutive"/> steps in a row reuse. Blocks count double-stream ones first (FLUX.1: 19 + 38).
/// Each image keeps its own cache; nothing is shared between images or requests, and a run is deterministic.
/// </summary>
public sealed record StepCacheOptions
{
    /// <summary>Reuse when the relative L1 change of the head blocks' residual is under this; 0 never reuses.</summary>
    public double Threshold { get; init; }

    /// <summary>Blocks every step runs before deciding (at least 1).</summary>
    public int HeadBlocks { get; init; } = 1;

    /// <summary>Last blocks every step runs (0 or more).</summary>
    public int TailBlocks { get; init; }

    /// <summary>First steps that always run every block.</summary>
    public int WarmupSteps { get; init; } = 1;

    /// <summary>Last steps that always run every block.</summary>
    public int FinalSteps { get; init; } = 1;

    /// <summary>The most steps in a row that reuse (at least 1).</summary>
    public int MaxConsecutive { get; init; } = 3;

    /// <summary>The caching of <paramref name="mode"/>; null for <see cref="SpeedMode.Lossless"/>.</summary>
    public static StepCacheOptions? For(SpeedMode mode) => mode switch
    {
        SpeedMode.Lossless => null,
        SpeedMode.Juiced => new StepCacheOptions { Threshold = 0.05, HeadBlocks = 1, TailBlocks = 1, WarmupSteps = 3, FinalSteps = 2, MaxConsecutive = 2 },
        SpeedMode.ExtraJuiced => new StepCacheOptions { Threshold = 0.10, HeadBlocks = 1, TailBlocks = 0, WarmupSteps = 2, FinalSteps = 1, MaxConsecutive = 3 },
        SpeedMode.Fastest => new StepCacheOptions { Threshold = 0.15, HeadBlocks = 1, TailBlocks = 0, WarmupSteps = 1, FinalSteps = 1, MaxConsecutive = 4 },
        _ => throw new ArgumentOutOfRangeException(nameof(mode), mode, "Not a SpeedMode."),
    };

    /// <summary>The first field out of range and why, or null when every field is valid.</summary>
    public (string Field, string Message)? Problem()
    {
        if (!double.IsFinite(Threshold) || Threshold < 0 || Threshold > 10)
        {
            return ("threshold", $"the step-cache threshold must be between 0 and 10, not {Threshold}");
        }

        if (HeadBlocks < 1 || HeadBlocks > 1000)
        {
            return ("head_blocks", $"head blocks must be between 1 and 1000, not {HeadBlocks}");
        }

        if (TailBlocks < 0 || TailBlocks > 1000)
        {
            return ("tail_blocks", $"tail blocks must be between 0 and 1000, not {TailBlocks}");
        }

        if (WarmupSteps < 0 || FinalSteps < 0)
        {
            return ("warmup_steps", $"warm-up and final steps must be 0 or more, not {WarmupSteps} and {FinalSteps}");
        }

        if (MaxConsecutive < 1)
        {
            return ("max_consecutive", $"max consecutive reused steps must be at least 1, not {MaxConsecutive}");
        }

        return null;
    }
}

/// <summary>The stable names of <see cref="SpeedMode"/> and the names the hosted APIs use for them.</summary>
public static class SpeedModes
{
    /// <summary>The stable names, in order of speed.</summary>
    public static IReadOnlyList<string> Names { get; } = ["lossless", "juiced", "extra_juiced", "fastest"];

    /// <summary>The stable name of <paramref name="mode"/>.</summary>
    public static string Name(SpeedMode mode) => mode switch
    {
        SpeedMode.Lossless => "lossless",
        SpeedMode.Juiced => "juiced",
        SpeedMode.ExtraJuiced => "extra_juiced",
        SpeedMode.Fastest => "fastest",
        _ => throw new ArgumentOutOfRangeException(nameof(mode), mode, "Not a SpeedMode."),
    };

    /// <summary>
    /// Reads a speed mode name: the stable names in any case, with spaces or hyphens for underscores, and the hosted
    /// APIs' labels, whose words before an emoji or parenthesis are one of them ("Extra Juiced 🚀 (even more speed)").
    /// "default", "none", "off" and the empty string are <see cref="SpeedMode.Lossless"/>.
    /// </summary>
    public static bool TryParse(string? text, out SpeedMode mode)
    {
        mode = SpeedMode.Lossless;
        if (text is null)
        {
            return false;
        }

        var words = new System.Text.StringBuilder();
        foreach (char c in text.Trim())
        {
            if (char.IsAsciiLetter(c))
            {
                words.Append(char.ToLowerInvariant(c));
            }
            else if (c is ' ' or '-' or '_')
            {
                if (words.Length > 0 && words[^1] != '_')
                {
                    words.Append('_');
                }
            }
            else
            {
                break;  // an emoji or a parenthesis ends the name
            }
        }

        string name = words.ToString().Trim('_');
        switch (name)
        {
            case "" or "default" or "none" or "off" or "lossless":
                mode = SpeedMode.Lossless;
                return true;
            case "juiced":
                mode = SpeedMode.Juiced;
                return true;
            case "extra_juiced":
                mode = SpeedMode.ExtraJuiced;
                return true;
            case "fastest":
                mode = SpeedMode.Fastest;
                return true;
            default:
                return false;
        }
    }
}
