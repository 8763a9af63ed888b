using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;
using Microsoft.AspNetCore.WebUtilities;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace FluxNative.Server;

/// <summary>
/// Generated images on disk, <c>OUTPUT_DIR/{prediction id}/out-{k}.{ext}</c>, served at <c>/v1/files/{id}/{name}</c>.
/// Their URLs carry an HMAC signature (key kept in the database), so a client can fetch them without the API key, as it
/// fetches Replicate's or OpenAI's image URLs; they stop working when the retention removes the files.
/// </summary>
internal sealed partial class OutputFiles
{
    private readonly byte[] signingKey;

    public OutputFiles(FluxServerOptions options, IPredictionStore store)
    {
        Directory = Path.GetFullPath(options.OutputDirectory);
        System.IO.Directory.CreateDirectory(Directory);
        Retention = options.OutputRetention;
        signingKey = Convert.FromBase64String(store.GetOrCreateSetting("url_signing_key", () => Convert.ToBase64String(RandomNumberGenerator.GetBytes(32))));
    }

    public string Directory { get; }

    public TimeSpan Retention { get; }

    /// <summary>Writes one image (to a temporary name, then renamed: a reader never sees half a file) and returns its name.</summary>
    public string Write(string id, int index, ImageFormat format, byte[] bytes)
    {
        string folder = Path.Combine(Directory, id);
        System.IO.Directory.CreateDirectory(folder);
        string name = $"out-{index}.{Images.Extension(format)}";
        string path = Path.Combine(folder, name);
        string temporary = path + ".tmp";
        File.WriteAllBytes(temporary, bytes);
        File.Move(temporary, path, overwrite: true);
        return name;
    }

    /// <summary>Writes and removes a small file in the folder (creating it again if it was removed): throws what an image's write would throw now.</summary>
    public void Probe()
    {
        System.IO.Directory.CreateDirectory(Directory);
        string probe = Path.Combine(Directory, $".probe-{Environment.ProcessId}");
        File.WriteAllBytes(probe, [1]);
        File.Delete(probe);
    }

    /// <summary>The signed absolute URL of an output file.</summary>
    public string Url(string baseUrl, string id, string name) => $"{baseUrl}/v1/files/{id}/{name}?sig={Sign(id, name)}";

    public bool Verify(string id, string name, string? signature)
    {
        if (string.IsNullOrEmpty(signature))
        {
            return false;
        }

        byte[] expected = Encoding.ASCII.GetBytes(Sign(id, name));
        byte[] given = Encoding.UTF8.GetBytes(signature);
        return CryptographicOperations.FixedTimeEquals(expected, given);
    }

    /// <summary>The path of an output file, or null for a name that is not one (no path tricks get through).</summary>
    public string? PathOf(string id, string name) =>
        IdPattern().IsMatch(id) && NamePattern().IsMatch(name) ? Path.Combine(Directory, id, name) : null;

    /// <summary>Deletes the output folders older than the retention; returns how many.</summary>
    public int Sweep(DateTimeOffset now)
    {
        int removed = 0;
        foreach (string folder in System.IO.Directory.EnumerateDirectories(Directory))
        {
            if (now - System.IO.Directory.GetLastWriteTimeUtc(folder) > Retention)
            {
                try
                {
                    System.IO.Directory.Delete(folder, recursive: true);
                    removed++;
                }
                catch (IOException)
                {
                    // In use; the next sweep takes it.
                }
            }
        }

        return removed;
    }

    public static string ContentType(string name) => Path.GetExtension(name) switch
    {
        ".png" => "image/png",
        ".jpg" => "image/jpeg",
        ".webp" => "image/webp",
        _ => "application/octet-stream",
    };

    private string Sign(string id, string name) =>
        WebEncoders.Base64UrlEncode(HMACSHA256.HashData(signingKey, Encoding.UTF8.GetBytes($"{id}/{name}")));

    [GeneratedRegex("^[a-z0-9]{1,64}$")]
    private static partial Regex IdPattern();

    [GeneratedRegex(@"^out-[0-9]{1,2}\.(png|jpg|webp)$")]
    private static partial Regex NamePattern();
}

/// <summary>Removes expired output files at start and then periodically.</summary>
internal sealed class RetentionSweeper(OutputFiles files, ILogger<RetentionSweeper> logger) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        TimeSpan period = TimeSpan.FromTicks(Math.Clamp(files.Retention.Ticks / 4, TimeSpan.FromSeconds(1).Ticks, TimeSpan.FromHours(1).Ticks));
        using var timer = new PeriodicTimer(period);
        do
        {
            try
            {
                int removed = files.Sweep(DateTimeOffset.UtcNow);
                if (removed > 0)
                {
                    logger.LogInformation("Removed the outputs of {Count} prediction(s) older than {Retention}", removed, files.Retention);
                }
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                logger.LogWarning(e, "The output sweep failed");
            }
        }
        while (await NextTickAsync(timer, stoppingToken).ConfigureAwait(false));
    }

    /// <summary>
    /// The next tick, or false once the host stops: also when it stops without having started (a port in use), where the
    /// host would otherwise log the cancellation as a failed service.
    /// </summary>
    private static async Task<bool> NextTickAsync(PeriodicTimer timer, CancellationToken stoppingToken)
    {
        try
        {
            return await timer.WaitForNextTickAsync(stoppingToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            return false;
        }
    }
}
