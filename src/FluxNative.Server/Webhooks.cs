using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace FluxNative.Server;

/// <summary>
/// Sends prediction webhooks as Replicate does (a POST of the prediction object), signed as Standard Webhooks are:
/// <c>webhook-id</c>, <c>webhook-timestamp</c> (Unix seconds) and <c>webhook-signature: v1,BASE64</c>, where BASE64 is
/// HMAC-SHA256 over <c>{id}.{timestamp}.{body}</c> keyed with the base64 part of the <c>whsec_…</c> secret.
/// Every delivery goes through the persisted outbox (<see cref="WebhookDelivery"/>): <see cref="Send"/> writes a row, and
/// the sender loop of each API node (or of an <c>all</c> node) leases the rows that are due, makes one attempt each, and
/// records the outcome: delivered; retried (a connection error, 408, 429 or 5xx) after an exponential backoff, with the
/// same webhook-id; or failed for good (the attempts used up, another 4xx, a redirect, a refused target), with the reason
/// kept in the row, logged and counted. A restart resumes the retries where they were; a node that dies while sending
/// leaves its lease to run out, and the attempt is made again (at least once, never lost). Worker nodes only write rows.
/// A redirect is neither followed nor retried (it could lead inside). Targets inside are refused (<see cref="WebhookTargets"/>),
/// and at most <see cref="FluxServerOptions.WebhookMaxConcurrency"/> deliveries are on the wire at once.
/// </summary>
internal sealed class WebhookDispatcher : BackgroundService
{
    /// <summary>The events a prediction can ask for (<c>webhook_events_filter</c>); all of them by default.</summary>
    public static readonly string[] Events = ["start", "output", "logs", "completed"];

    /// <summary>The longest wait between two looks at the outbox when nothing woke the sender (a retry coming due, a row another node wrote while the notification was missed).</summary>
    private static readonly TimeSpan MaxPollInterval = TimeSpan.FromSeconds(1);

    private readonly FluxServerOptions options;
    private readonly IPredictionStore store;
    private readonly ServerMetrics metrics;
    private readonly ILogger<WebhookDispatcher> logger;
    private readonly HttpClient client;
    private readonly byte[] key;
    private readonly ConcurrentDictionary<Task, byte> inFlight = new();
    private readonly CancellationTokenSource stopping = new();
    private readonly WebhookTargets targets;
    private readonly SemaphoreSlim wake = new(0, 1);
    private int disposed;
    private int leasing;

    // Deliveries not yet in the outbox, in the order their events happened: Send puts them here and the sender loop
    // writes them (at once: Send wakes it), so a pipeline thread reporting a step never waits for a database write; one
    // that cannot take them (it is down) gets them when it can.
    private readonly object unsavedGate = new();
    private List<WebhookDelivery> unsaved = [];

    public WebhookDispatcher(FluxServerOptions options, IPredictionStore store, WebhookTargets targets, ServerMetrics metrics, ILogger<WebhookDispatcher> logger)
    {
        this.options = options;
        this.store = store;
        this.metrics = metrics;
        this.logger = logger;
        this.targets = targets;
        Secret = options.WebhookSecret
            ?? (Environment.GetEnvironmentVariable("FLUX_WEBHOOK_SECRET") is { Length: > 0 } fromEnvironment
                ? fromEnvironment
                : store.GetOrCreateSetting("webhook_secret", () => "whsec_" + Convert.ToBase64String(RandomNumberGenerator.GetBytes(32))));
        key = KeyOf(Secret);
        var handler = new SocketsHttpHandler
        {
            UseProxy = false,
            AllowAutoRedirect = false,
            ConnectTimeout = options.WebhookTimeout,
            ConnectCallback = ConnectAsync,
        };
        client = new HttpClient(handler) { Timeout = options.WebhookTimeout };
        metrics.ObserveOutbox(store.Outbox);
    }

    /// <summary>The signing secret, as <c>GET /v1/webhooks/default/secret</c> returns it.</summary>
    public string Secret { get; }

    /// <summary>This node's name in the outbox's leases (unique per process and dispatcher).</summary>
    public string NodeId { get; } = $"{Environment.MachineName}:{Environment.ProcessId}:{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(3))}";

    /// <summary>Deliveries this node is making now.</summary>
    public int Pending => inFlight.Count;

    /// <summary>How long a node holds a delivery it sends: the request's time, and a margin for recording the outcome.</summary>
    private TimeSpan Lease => options.WebhookTimeout + TimeSpan.FromSeconds(5);

    /// <summary>The key bytes of a secret: the base64 after <c>whsec_</c>, else the secret's UTF-8 bytes.</summary>
    public static byte[] KeyOf(string secret)
    {
        if (secret.StartsWith("whsec_", StringComparison.Ordinal))
        {
            try
            {
                return Convert.FromBase64String(secret["whsec_".Length..]);
            }
            catch (FormatException)
            {
                throw new FluxServerConfigurationException("The webhook secret starts with whsec_ but the rest is not base64.");
            }
        }

        return Encoding.UTF8.GetBytes(secret);
    }

    /// <summary>The <c>webhook-signature</c> value of one delivery.</summary>
    public static string Sign(byte[] key, string id, long timestamp, string body) =>
        "v1," + Convert.ToBase64String(HMACSHA256.HashData(key, Encoding.UTF8.GetBytes($"{id}.{timestamp.ToString(CultureInfo.InvariantCulture)}.{body}")));

    /// <summary>Checks a webhook URL when a prediction is created (see <see cref="WebhookTargets.CheckAsync"/>).</summary>
    public Task ValidateAsync(string url, string field, CancellationToken cancellationToken) => targets.CheckAsync(url, field, cancellationToken);

    /// <summary>
    /// Puts <paramref name="body"/> (the prediction) in the outbox for <paramref name="eventName"/>, when the prediction
    /// asked for it: handed to the sender loop, which writes it at once (or, while the database cannot take it, as soon
    /// as it can). Returns without waiting for the database.
    /// </summary>
    public void Send(PredictionView prediction, string eventName, string body)
    {
        if (WebhookDelivery.For(prediction, eventName, body) is not { } delivery)
        {
            return;
        }

        lock (unsavedGate)
        {
            unsaved.Add(delivery);
        }

        Wake();
    }

    /// <summary>The deliveries of <paramref name="events"/> that <paramref name="prediction"/> asked for, all with one <paramref name="body"/>.</summary>
    public static List<WebhookDelivery> For(PredictionView prediction, string body, params string[] events) =>
        [.. events.Select(e => WebhookDelivery.For(prediction, e, body)).OfType<WebhookDelivery>()];

    /// <summary>Looks at the outbox now (a row was written: here, or by another node, which PostgreSQL's notification tells).</summary>
    public void Wake()
    {
        try
        {
            wake.Release();
        }
        catch (SemaphoreFullException)
        {
            // Woken already.
        }
    }

    /// <summary>
    /// Waits (up to <paramref name="timeout"/>) until nothing in the outbox is due and this node sends nothing: the
    /// deliveries that could be made now were (a retry not yet due is left to its time).
    /// </summary>
    public async Task DrainAsync(TimeSpan timeout)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (clock.Elapsed < timeout)
        {
            Wake();
            try
            {
                // Looked at again after the database's answer: a lease taken while it was read makes a row not due and not in flight yet.
                if (Volatile.Read(ref leasing) == 0 && inFlight.IsEmpty && !HasUnsaved && store.Outbox().Due == 0
                    && Volatile.Read(ref leasing) == 0 && inFlight.IsEmpty)
                {
                    return;
                }
            }
            catch (Exception e) when (StorageMonitor.IsStorageFault(e))
            {
                return;   // the rows wait in the database for a node that can reach it
            }

            await Task.Delay(20).ConfigureAwait(false);
        }
    }

    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        await base.StopAsync(cancellationToken).ConfigureAwait(false);
        // Requests on the wire get a moment to finish; what they leave is in the outbox for the next start.
        await Task.WhenAny(Task.WhenAll(inFlight.Keys), Task.Delay(TimeSpan.FromSeconds(2), CancellationToken.None)).ConfigureAwait(false);
        await stopping.CancelAsync().ConfigureAwait(false);
    }

    public override void Dispose()
    {
        // Registered as a service and as a hosted service: the container disposes it twice.
        if (Interlocked.Exchange(ref disposed, 1) == 1)
        {
            return;
        }

        stopping.Cancel();
        client.Dispose();
        stopping.Dispose();
        base.Dispose();
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        await Task.Yield();
        bool sends = options.Role != ServerRole.Worker;   // a worker only writes deliveries; the API nodes send them
        Task listening = options.Role == ServerRole.Api ? store.ListenAsync(_ => Wake(), stoppingToken) : Task.CompletedTask;
        TimeSpan poll = options.WebhookRetryDelay < MaxPollInterval ? options.WebhookRetryDelay : MaxPollInterval;
        string? problem = null;
        DateTime nextPrune = DateTime.UtcNow;
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                if (sends && DateTime.UtcNow >= nextPrune)
                {
                    // Finished rows go with the outputs (--retention-hours): by then no event of theirs is written again.
                    nextPrune = DateTime.UtcNow + PruneInterval(options.OutputRetention);
                    if (store.PruneDeliveries(options.OutputRetention) is > 0 and int pruned)
                    {
                        logger.LogInformation("Removed {Count} finished webhook deliveries older than {Retention} from the outbox", pruned, options.OutputRetention);
                    }
                }

                int free = options.WebhookMaxConcurrency - inFlight.Count;
                IReadOnlyList<WebhookDelivery> due = [];
                // A batch being written, or a row leased, is neither unsaved, due nor in flight: DrainAsync must not take that for done.
                Interlocked.Increment(ref leasing);
                try
                {
                    SaveUnsaved();
                    due = sends && free > 0 ? store.LeaseDeliveries(NodeId, free, Lease) : [];
                    foreach (WebhookDelivery delivery in due)
                    {
                        Task attempt = AttemptAsync(delivery);
                        inFlight.TryAdd(attempt, 0);
                        _ = attempt.ContinueWith(t => { inFlight.TryRemove(t, out _); Wake(); }, TaskScheduler.Default);
                    }
                }
                finally
                {
                    Interlocked.Decrement(ref leasing);
                }

                if (problem is not null)
                {
                    logger.LogInformation("The webhook outbox can be used again");
                    problem = null;
                }

                if (due.Count > 0 && due.Count == free)
                {
                    continue;   // more may be due: look again at once
                }
            }
            catch (Exception e) when (StorageMonitor.IsStorageFault(e))
            {
                string now = StorageMonitor.Describe(e);
                if (problem is null)
                {
                    logger.LogError("The webhook outbox cannot be used: {Reason}; its deliveries wait in it (or here) until it can", now);
                }

                problem = now;
            }

            try
            {
                await wake.WaitAsync(poll, stoppingToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                break;
            }
        }

        await listening.ConfigureAwait(false);
    }

    /// <summary>How often finished deliveries are pruned: a quarter of the retention, from 1 s to an hour (as the output sweep).</summary>
    internal static TimeSpan PruneInterval(TimeSpan retention) =>
        TimeSpan.FromTicks(Math.Clamp(retention.Ticks / 4, TimeSpan.FromSeconds(1).Ticks, TimeSpan.FromHours(1).Ticks));

    /// <summary>Writes the deliveries <see cref="Send"/> handed over, in one transaction; throws (keeping them, in order) while the database cannot take them.</summary>
    private void SaveUnsaved()
    {
        List<WebhookDelivery> batch;
        lock (unsavedGate)
        {
            if (unsaved.Count == 0)
            {
                return;
            }

            (batch, unsaved) = (unsaved, []);
        }

        try
        {
            store.AddDeliveries(batch);
        }
        catch
        {
            lock (unsavedGate)
            {
                unsaved.InsertRange(0, batch);
            }

            throw;
        }
    }

    private bool HasUnsaved
    {
        get
        {
            lock (unsavedGate)
            {
                return unsaved.Count > 0;
            }
        }
    }

    /// <summary>One attempt of a leased delivery, and its outcome recorded. Never throws.</summary>
    private async Task AttemptAsync(WebhookDelivery d)
    {
        await Task.Yield();
        (DeliveryOutcome outcome, string? failure) = await PostAsync(d).ConfigureAwait(false);
        TimeSpan retryIn = TimeSpan.Zero;
        if (outcome == DeliveryOutcome.Retry && d.Attempt >= options.WebhookMaxAttempts)
        {
            outcome = DeliveryOutcome.Failed;
            failure = $"failed {d.Attempt} times, the last: {failure}";
        }

        switch (outcome)
        {
            case DeliveryOutcome.Delivered:
                break;
            case DeliveryOutcome.Retry:
                // 1 s, 2 s, 4 s … (from --webhook-retry-delay), at most 5 minutes apart.
                double factor = Math.Pow(2, Math.Min(d.Attempt - 1, 30));
                retryIn = TimeSpan.FromTicks((long)Math.Min(options.WebhookRetryDelay.Ticks * factor, TimeSpan.FromMinutes(5).Ticks));
                logger.LogInformation("Webhook {Event} of {Prediction} failed ({Failure}, attempt {Attempt}); retrying in {Delay}",
                    d.Event, d.PredictionId, failure, d.Attempt, retryIn);
                break;
            default:
                logger.LogWarning("Webhook {Event} of {Prediction} to {Url} {Failure}; giving up (webhook-id {Id}, kept in the outbox as failed)",
                    d.Event, d.PredictionId, d.Url, failure, d.Id);
                break;
        }

        metrics.WebhookAttempt(outcome);
        try
        {
            if (!store.RecordDelivery(NodeId, d, outcome, retryIn, failure))
            {
                logger.LogWarning("Webhook {Event} of {Prediction}: this node's lease ran out before the outcome was recorded; the delivery may be made again", d.Event, d.PredictionId);
            }
        }
        catch (Exception e) when (StorageMonitor.IsStorageFault(e))
        {
            // The lease runs out and the attempt is made again once the database is back: at least once.
            logger.LogWarning("Webhook {Event} of {Prediction}: its outcome could not be recorded ({Reason}); it will be tried again", d.Event, d.PredictionId, StorageMonitor.Describe(e));
        }
    }

    /// <summary>One POST of a delivery: what came of it, and why it failed when it did.</summary>
    private async Task<(DeliveryOutcome Outcome, string? Failure)> PostAsync(WebhookDelivery d)
    {
        try
        {
            long timestamp = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
            using var request = new HttpRequestMessage(HttpMethod.Post, d.Url)
            {
                Content = new StringContent(d.Body, Encoding.UTF8, "application/json"),
            };
            request.Headers.Add("webhook-id", d.Id);
            request.Headers.Add("webhook-timestamp", timestamp.ToString(CultureInfo.InvariantCulture));
            request.Headers.Add("webhook-signature", Sign(key, d.Id, timestamp, d.Body));
            request.Headers.Add("webhook-event", d.Event);
            request.Headers.UserAgent.ParseAdd("FluxNative-Server/1.0");
            using HttpResponseMessage response = await client.SendAsync(request, stopping.Token).ConfigureAwait(false);
            int status = (int)response.StatusCode;
            return status switch
            {
                >= 200 and < 300 => (DeliveryOutcome.Delivered, null),
                // Following it could lead to an inside host, and retrying gets the same answer.
                >= 300 and < 400 => (DeliveryOutcome.Failed, $"answered a redirect ({status}); redirects are not followed nor retried"),
                >= 500 or 408 or 429 => (DeliveryOutcome.Retry, $"HTTP {status}"),
                _ => (DeliveryOutcome.Failed, $"refused with {status}; not retried"),
            };
        }
        catch (OperationCanceledException) when (stopping.IsCancellationRequested)
        {
            return (DeliveryOutcome.Retry, "the server stopped while sending");
        }
        catch (HttpRequestException e) when (e.InnerException is WebhookTargetRefusedException refused)
        {
            return (DeliveryOutcome.Failed, $"not sent: {refused.Message}");
        }
        catch (Exception e) when (e is HttpRequestException or OperationCanceledException or IOException)
        {
            return (DeliveryOutcome.Retry, e.Message);
        }
    }

    private async ValueTask<Stream> ConnectAsync(SocketsHttpConnectionContext context, CancellationToken cancellationToken)
    {
        // The addresses connected to are the ones checked: no second lookup can answer differently.
        IPAddress[] addresses = await targets.ResolveForConnectAsync(context.DnsEndPoint.Host, cancellationToken).ConfigureAwait(false);
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(addresses, context.DnsEndPoint.Port, cancellationToken).ConfigureAwait(false);
            return new NetworkStream(socket, ownsSocket: true);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }
}
