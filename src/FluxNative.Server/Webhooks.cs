using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Logging;

namespace FluxNative.Server;

/// <summary>
/// Sends prediction webhooks as Replicate does (a POST of the prediction object), signed as Standard Webhooks are:
/// <c>webhook-id</c>, <c>webhook-timestamp</c> (Unix seconds) and <c>webhook-signature: v1,BASE64</c>, where BASE64 is
/// HMAC-SHA256 over <c>{id}.{timestamp}.{body}</c> keyed with the base64 part of the <c>whsec_…</c> secret. A failed
/// delivery (a connection error, 408, 429 or 5xx) is retried with exponential backoff; the webhook-id stays the same.
/// A redirect is neither followed nor retried (it could lead inside). Targets inside are refused (<see cref="WebhookTargets"/>),
/// and at most <see cref="FluxServerOptions.WebhookMaxConcurrency"/> deliveries are on the wire at once.
/// </summary>
internal sealed class WebhookDispatcher : IDisposable
{
    /// <summary>The events a prediction can ask for (<c>webhook_events_filter</c>); all of them by default.</summary>
    public static readonly string[] Events = ["start", "output", "logs", "completed"];

    private readonly FluxServerOptions options;
    private readonly ILogger<WebhookDispatcher> logger;
    private readonly HttpClient client;
    private readonly byte[] key;
    private readonly ConcurrentDictionary<Task, byte> inFlight = new();
    private readonly CancellationTokenSource stopping = new();
    private readonly WebhookTargets targets;

    // Bounds the requests on the wire, not the deliveries waiting: a burst of events (or a slow receiver holding each
    // request until its timeout) cannot open an unbounded number of sockets.
    private readonly SemaphoreSlim sending;

    public WebhookDispatcher(FluxServerOptions options, IPredictionStore store, WebhookTargets targets, ILogger<WebhookDispatcher> logger)
    {
        this.options = options;
        this.logger = logger;
        this.targets = targets;
        sending = new SemaphoreSlim(options.WebhookMaxConcurrency);
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
    }

    /// <summary>The signing secret, as <c>GET /v1/webhooks/default/secret</c> returns it.</summary>
    public string Secret { get; }

    /// <summary>Deliveries still being tried.</summary>
    public int Pending => inFlight.Count;

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

    /// <summary>Sends <paramref name="body"/> (the prediction) for <paramref name="eventName"/>, when the prediction asked for it.</summary>
    public void Send(PredictionView prediction, string eventName, string body)
    {
        if (prediction.Webhook is not { } url || !prediction.WebhookEvents.Contains(eventName))
        {
            return;
        }

        string id = $"msg_{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(12))}";
        Task delivery = DeliverAsync(url, id, prediction.Id, eventName, body);
        inFlight.TryAdd(delivery, 0);
        _ = delivery.ContinueWith(t => inFlight.TryRemove(t, out _), TaskScheduler.Default);
    }

    /// <summary>Waits (up to <paramref name="timeout"/>) for the deliveries still being tried.</summary>
    public async Task DrainAsync(TimeSpan timeout)
    {
        Task all = Task.WhenAll(inFlight.Keys);
        await Task.WhenAny(all, Task.Delay(timeout)).ConfigureAwait(false);
    }

    public void Dispose()
    {
        stopping.Cancel();
        client.Dispose();
        stopping.Dispose();
        sending.Dispose();
    }

    private async Task DeliverAsync(string url, string id, string predictionId, string eventName, string body)
    {
        await Task.Yield();
        TimeSpan delay = options.WebhookRetryDelay;
        for (int attempt = 1; attempt <= options.WebhookMaxAttempts; attempt++)
        {
            string? failure;
            try
            {
                long timestamp = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
                using var request = new HttpRequestMessage(HttpMethod.Post, url)
                {
                    Content = new StringContent(body, Encoding.UTF8, "application/json"),
                };
                request.Headers.Add("webhook-id", id);
                request.Headers.Add("webhook-timestamp", timestamp.ToString(CultureInfo.InvariantCulture));
                request.Headers.Add("webhook-signature", Sign(key, id, timestamp, body));
                request.Headers.Add("webhook-event", eventName);
                request.Headers.UserAgent.ParseAdd("FluxNative-Server/1.0");
                int status;
                await sending.WaitAsync(stopping.Token).ConfigureAwait(false);
                try
                {
                    using HttpResponseMessage response = await client.SendAsync(request, stopping.Token).ConfigureAwait(false);
                    status = (int)response.StatusCode;
                }
                finally
                {
                    sending.Release();
                }

                if (status is >= 200 and < 300)
                {
                    return;
                }

                failure = $"HTTP {status}";
                if (status is >= 300 and < 400)
                {
                    // Following it could lead to an inside host, and retrying gets the same answer.
                    logger.LogWarning("Webhook {Event} of {Prediction} to {Url} answered a redirect ({Status}); redirects are not followed nor retried",
                        eventName, predictionId, url, status);
                    return;
                }

                if (status is < 500 and not 408 and not 429)
                {
                    logger.LogWarning("Webhook {Event} of {Prediction} to {Url} refused with {Status}; not retried", eventName, predictionId, url, status);
                    return;
                }
            }
            catch (OperationCanceledException) when (stopping.IsCancellationRequested)
            {
                return;
            }
            catch (HttpRequestException e) when (e.InnerException is WebhookTargetRefusedException refused)
            {
                logger.LogWarning("Webhook {Event} of {Prediction} not sent: {Reason}", eventName, predictionId, refused.Message);
                return;
            }
            catch (Exception e) when (e is HttpRequestException or OperationCanceledException or IOException)
            {
                failure = e.Message;
            }

            if (attempt == options.WebhookMaxAttempts)
            {
                logger.LogWarning("Webhook {Event} of {Prediction} to {Url} failed {Attempts} times ({Failure}); giving up",
                    eventName, predictionId, url, attempt, failure);
                return;
            }

            logger.LogInformation("Webhook {Event} of {Prediction} failed ({Failure}); retrying in {Delay}", eventName, predictionId, failure, delay);
            try
            {
                await Task.Delay(delay, stopping.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }

            delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, TimeSpan.FromMinutes(5).Ticks));
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
