using System.Security.Cryptography;
using System.Text;

namespace FluxNative.Server;

/// <summary>
/// One webhook delivery in the outbox (the <c>webhook_deliveries</c> table of either store): a prediction's event for its
/// webhook, with the body as it was when the event happened. <see cref="Id"/> is the <c>webhook-id</c> every attempt
/// carries. A node leases due deliveries (<see cref="IPredictionStore.LeaseDeliveries"/>) and records each attempt's
/// outcome (<see cref="IPredictionStore.RecordDelivery"/>), so exactly one node sends an attempt and a restart resumes
/// the retries where they were.
/// </summary>
/// <param name="Id">The <c>webhook-id</c>: for <c>start</c>, <c>output</c> and <c>completed</c> one per prediction and event
/// (<see cref="StableId"/>), so whichever node writes the event, and however often, it is delivered once; a <c>logs</c>
/// event's is random.</param>
/// <param name="PredictionId">The prediction the event is of.</param>
/// <param name="Event"><c>start</c>, <c>output</c>, <c>logs</c> or <c>completed</c> (the <c>webhook-event</c> header).</param>
/// <param name="Url">The prediction's webhook.</param>
/// <param name="Body">The prediction object when the event happened, as sent (and signed).</param>
/// <param name="Attempt">The attempts made so far, this one included (set when leased; 0 before).</param>
internal sealed record WebhookDelivery(string Id, string PredictionId, string Event, string Url, string Body, int Attempt = 0)
{
    /// <summary>The delivery of <paramref name="eventName"/> for <paramref name="prediction"/>, or null when it asked for no such webhook.</summary>
    public static WebhookDelivery? For(PredictionView prediction, string eventName, string body)
    {
        if (prediction.Webhook is not { } url || !prediction.WebhookEvents.Contains(eventName))
        {
            return null;
        }

        string id = eventName == "logs"
            ? $"msg_{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(12))}"
            : StableId(prediction.Id, eventName, url);
        return new WebhookDelivery(id, prediction.Id, eventName, url, body);
    }

    /// <summary>
    /// The one <c>webhook-id</c> of a prediction's <paramref name="eventName"/> to <paramref name="url"/>: a digest of the
    /// three, so two nodes (or a job run twice) that write the event write one row.
    /// </summary>
    public static string StableId(string predictionId, string eventName, string url) =>
        "msg_" + Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes($"{predictionId}\n{eventName}\n{url}")))[..24];
}

/// <summary>What one attempt of a delivery came to.</summary>
internal enum DeliveryOutcome
{
    /// <summary>The receiver took it (2xx): done.</summary>
    Delivered,

    /// <summary>It failed in a way worth trying again (a connection error, 408, 429, 5xx): due again later.</summary>
    Retry,

    /// <summary>It failed for good (attempts used up, a 4xx, a redirect, a refused target): recorded with the reason, never sent again.</summary>
    Failed,
}

/// <summary>The outbox at one moment: deliveries still to be made (<see cref="Due"/> of them due now), and those that failed for good.</summary>
internal sealed record OutboxState(int Pending, int Due, int Failed);
