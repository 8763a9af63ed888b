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
/// Targets on loopback, link-local and private addresses are refused unless allowed (checked when the prediction is
/// created, and again on the address actually connected to, so DNS cannot point a public name at an inside host).
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

    public WebhookDispatcher(FluxServerOptions options, PredictionStore store, ILogger<WebhookDispatcher> logger)
    {
        this.options = options;
        this.logger = logger;
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

    /// <summary>Checks a webhook URL when a prediction is created: absolute http(s), and not an inside address unless allowed.</summary>
    public void Validate(string url, string field)
    {
        if (url.Length > 2048 || !Uri.TryCreate(url, UriKind.Absolute, out Uri? uri) || (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps))
        {
            throw ApiException.BadRequest($"{field} must be an absolute http or https URL (got '{(url.Length > 100 ? url[..100] + "…" : url)}').", field);
        }

        if (!options.AllowPrivateWebhookTargets)
        {
            string host = uri.IdnHost;
            bool inside = IPAddress.TryParse(host, out IPAddress? address)
                ? IsInside(address)
                : host.Equals("localhost", StringComparison.OrdinalIgnoreCase) || host.EndsWith(".localhost", StringComparison.OrdinalIgnoreCase);
            if (inside)
            {
                throw ApiException.BadRequest(
                    $"{field} points at a loopback, link-local or private address ({uri.Host}); such targets are refused unless the server allows them (--allow-private-webhooks).",
                    field);
            }
        }
    }

    /// <summary>True for addresses a webhook must not reach: loopback, link-local, private, unspecified, shared, multicast.</summary>
    public static bool IsInside(IPAddress address)
    {
        if (address.IsIPv4MappedToIPv6)
        {
            address = address.MapToIPv4();
        }

        if (IPAddress.IsLoopback(address) || address.Equals(IPAddress.Any) || address.Equals(IPAddress.IPv6Any) || address.Equals(IPAddress.Broadcast))
        {
            return true;
        }

        if (address.AddressFamily == AddressFamily.InterNetwork)
        {
            byte[] b = address.GetAddressBytes();
            return b[0] == 0 || b[0] == 10 || b[0] == 127
                || (b[0] == 169 && b[1] == 254)
                || (b[0] == 172 && b[1] >= 16 && b[1] <= 31)
                || (b[0] == 192 && b[1] == 168)
                || (b[0] == 100 && b[1] >= 64 && b[1] <= 127)
                || b[0] >= 224;
        }

        byte[] v6 = address.GetAddressBytes();
        return address.IsIPv6LinkLocal || address.IsIPv6SiteLocal || address.IsIPv6Multicast
            || (v6[0] & 0xFE) == 0xFC;   // unique local fc00::/7
    }

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
                using HttpResponseMessage response = await client.SendAsync(request, stopping.Token).ConfigureAwait(false);
                int status = (int)response.StatusCode;
                if (response.IsSuccessStatusCode)
                {
                    return;
                }

                failure = $"HTTP {status}";
                if (status is >= 400 and < 500 and not 408 and not 429)
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
        string host = context.DnsEndPoint.Host;
        IPAddress[] addresses = IPAddress.TryParse(host, out IPAddress? literal)
            ? [literal]
            : await Dns.GetHostAddressesAsync(host, cancellationToken).ConfigureAwait(false);
        if (!options.AllowPrivateWebhookTargets && addresses.FirstOrDefault(IsInside) is { } inside)
        {
            throw new WebhookTargetRefusedException($"{host} resolves to {inside}, a loopback, link-local or private address.");
        }

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

    private sealed class WebhookTargetRefusedException(string message) : Exception(message);
}
