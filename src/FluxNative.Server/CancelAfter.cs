using System.Globalization;

namespace FluxNative.Server;

/// <summary>
/// Replicate's <c>Cancel-After</c> header: the longest a prediction may live, from its creation, before it is canceled
/// (<c>30s</c>, <c>5m</c>, <c>1h30m45s</c>, <c>1d</c>, or bare seconds; at least 5 s, as Replicate). Unlike the server's
/// request timeout, which fails a prediction, this cancels it, as the client asked.
/// </summary>
internal static class CancelAfter
{
    public const string Header = "Cancel-After";

    /// <summary>The shortest duration accepted (Replicate's).</summary>
    public static readonly TimeSpan Minimum = TimeSpan.FromSeconds(5);

    private static readonly TimeSpan Maximum = TimeSpan.FromDays(365);

    /// <summary>The duration in the header, or null without one; a 400 naming the header when it is not a duration in range.</summary>
    public static TimeSpan? Parse(string? header)
    {
        if (string.IsNullOrWhiteSpace(header))
        {
            return null;
        }

        string text = header.Trim();
        bool ok = text.Length <= 64;
        TimeSpan total = TimeSpan.Zero;
        int k = 0;
        while (ok && k < text.Length)
        {
            // One part: a number, then a unit (none, on the last part only, means seconds).
            int start = k;
            while (k < text.Length && (char.IsAsciiDigit(text[k]) || text[k] == '.'))
            {
                k++;
            }

            int unitStart = k;
            while (k < text.Length && char.IsAsciiLetterLower(text[k]))
            {
                k++;
            }

            string unit = text[unitStart..k];
            ok = double.TryParse(text.AsSpan(start, unitStart - start), NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out double n)
                && (unit.Length > 0 || k == text.Length);
            double? seconds = !ok ? null : unit switch
            {
                "d" => n * 86400,
                "h" => n * 3600,
                "m" => n * 60,
                "s" or "" => n,
                "ms" => n / 1000,
                _ => null,
            };
            ok = seconds is { } value && value <= Maximum.TotalSeconds && (total += TimeSpan.FromSeconds(value)) <= Maximum;
        }

        if (!ok || total < Minimum)
        {
            throw ApiException.BadRequest(
                $"{Header} must be a duration of at least {Minimum.TotalSeconds:0} s, such as 30s, 5m or 1h30m45s (seconds when no unit), at most 365d (got '{(text.Length > 40 ? text[..40] + "…" : text)}').",
                Header);
        }

        return total;
    }

    /// <summary>Cancels <paramref name="p"/> when <paramref name="after"/> has passed since it was created, unless it is finished by then.</summary>
    public static void Schedule(PredictionService service, Prediction p, TimeSpan after)
    {
        TimeSpan left = after - (DateTimeOffset.UtcNow - p.View.CreatedAt);
        var timer = new CancellationTokenSource(left > TimeSpan.Zero ? left : TimeSpan.Zero);
        CancellationTokenRegistration registration = timer.Token.Register(() =>
        {
            if (!p.View.IsTerminal)
            {
                p.Log(string.Create(CultureInfo.InvariantCulture, $"{Header} ({after.TotalSeconds:0.###} s) reached: canceling."));
                service.Stop(p, AbortReason.Canceled);
            }
        });
        _ = p.Completion.ContinueWith(_ =>
        {
            registration.Dispose();
            timer.Dispose();
        }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }
}
