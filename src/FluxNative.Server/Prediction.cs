using System.Text;
using System.Threading.Channels;

namespace FluxNative.Server;

/// <summary>Replicate's prediction statuses.</summary>
internal static class PredictionStatus
{
    /// <summary>Accepted, waiting in the queue.</summary>
    public const string Starting = "starting";

    /// <summary>The pipeline runs it.</summary>
    public const string Processing = "processing";

    public const string Succeeded = "succeeded";

    public const string Failed = "failed";

    public const string Canceled = "canceled";

    public static bool IsTerminal(string status) => status is Succeeded or Failed or Canceled;
}

/// <summary>Which API created a prediction.</summary>
internal static class PredictionKind
{
    /// <summary><c>POST /v1/predictions</c> or <c>POST /v1/models/{owner}/{name}/predictions</c>.</summary>
    public const string Replicate = "prediction";

    /// <summary><c>POST /v1/images/generations</c>.</summary>
    public const string OpenAi = "openai";
}

/// <summary>A prediction as stored and as answered: an immutable snapshot.</summary>
internal sealed record PredictionView
{
    public required string Id { get; init; }

    public required string Kind { get; init; }

    public required string Model { get; init; }

    public string? Version { get; init; }

    public required string Status { get; init; }

    /// <summary>The input as JSON text.</summary>
    public required string Input { get; init; }

    /// <summary>The output files' names (in the prediction's folder), or null before there is output.</summary>
    public IReadOnlyList<string>? Output { get; init; }

    public string? Error { get; init; }

    public string Logs { get; init; } = string.Empty;

    public IReadOnlyDictionary<string, double>? Metrics { get; init; }

    public required DateTimeOffset CreatedAt { get; init; }

    public DateTimeOffset? StartedAt { get; init; }

    public DateTimeOffset? CompletedAt { get; init; }

    public string? Webhook { get; init; }

    public IReadOnlyList<string> WebhookEvents { get; init; } = [];

    /// <summary>The base URL of the request that created it: where its links point when there is no request to take it from.</summary>
    public required string BaseUrl { get; init; }

    public bool IsTerminal => PredictionStatus.IsTerminal(Status);
}

/// <summary>An event of a prediction's Server-Sent Events stream.</summary>
internal sealed record ServerEvent(string Event, string Data);

/// <summary>Why a prediction was stopped before it finished.</summary>
internal enum AbortReason
{
    Canceled,
    TimedOut,
    Shutdown,
}

/// <summary>
/// A prediction that is not finished: its current snapshot, logs, progress, the token that stops it, and the
/// subscribers of its event stream. Every change goes through here, under one lock.
/// </summary>
internal sealed class Prediction(PredictionView initial, GenerationRequest request, GenerationPlan plan) : IDisposable
{
    private readonly object gate = new();
    private readonly StringBuilder logs = new(initial.Logs);
    private readonly List<Channel<ServerEvent>> subscribers = [];
    private readonly TaskCompletionSource<PredictionView> completion = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private PredictionView view = initial;
    private AbortReason? abortReason;

    public string Id { get; } = initial.Id;

    public GenerationRequest Request => request;

    public GenerationPlan Plan => plan;

    /// <summary>
    /// True for a prediction an API node follows only for a wait or a stream (<see cref="PredictionService.Follow"/>): it was
    /// created on another node (or before this one restarted), so <see cref="Request"/> and <see cref="Plan"/> are not
    /// here, nor are its queue place, deadline and counts this node's.
    /// </summary>
    public bool CreatedElsewhere { get; init; }

    /// <summary>Fires to stop the generation (cancel, timeout, shutdown).</summary>
    public CancellationTokenSource Abort { get; } = new();

    /// <summary>Fires when the request's time is up.</summary>
    public CancellationTokenSource? Timeout { get; set; }

    public AbortReason? AbortReason
    {
        get
        {
            lock (gate)
            {
                return abortReason;
            }
        }
    }

    /// <summary>Completes with the final snapshot once the prediction is succeeded, failed or canceled.</summary>
    public Task<PredictionView> Completion => completion.Task;

    public PredictionView View
    {
        get
        {
            lock (gate)
            {
                return Snapshot();
            }
        }
    }

    /// <summary>Applies <paramref name="change"/> unless the prediction is already finished; returns the new snapshot, or null.</summary>
    public PredictionView? Update(Func<PredictionView, PredictionView> change)
    {
        lock (gate)
        {
            if (view.IsTerminal)
            {
                return null;
            }

            view = change(view);
            return Snapshot();
        }
    }

    /// <summary>Records why it is being stopped (the first reason wins) and fires <see cref="Abort"/>; false when it is finished already.</summary>
    public bool RequestAbort(AbortReason reason)
    {
        lock (gate)
        {
            if (view.IsTerminal)
            {
                return false;
            }

            abortReason ??= reason;
        }

        try
        {
            Abort.Cancel();
        }
        catch (ObjectDisposedException)
        {
            // Finished and disposed meanwhile.
        }

        return true;
    }

    /// <summary>Streams now subscribed.</summary>
    public int Subscribers
    {
        get
        {
            lock (gate)
            {
                return subscribers.Count;
            }
        }
    }

    public void Log(string line)
    {
        lock (gate)
        {
            logs.Append(line).Append('\n');
            PublishLocked(new ServerEvent("logs", line));
        }
    }

    public void Publish(ServerEvent e)
    {
        lock (gate)
        {
            PublishLocked(e);
        }
    }

    /// <summary>Subscribes to the event stream: the snapshot at that moment and the events after it.</summary>
    public (PredictionView View, ChannelReader<ServerEvent> Events) Subscribe()
    {
        lock (gate)
        {
            var channel = Channel.CreateUnbounded<ServerEvent>(new UnboundedChannelOptions { SingleReader = true });
            if (view.IsTerminal)
            {
                channel.Writer.Complete();
            }
            else
            {
                subscribers.Add(channel);
            }

            return (Snapshot(), channel.Reader);
        }
    }

    public void Unsubscribe(ChannelReader<ServerEvent> reader)
    {
        lock (gate)
        {
            subscribers.RemoveAll(c => c.Reader == reader);
        }
    }

    /// <summary>
    /// Makes the prediction final, once: <paramref name="finish"/> sets status and results; the <paramref name="events"/> of
    /// the final snapshot go to the subscribers, whose streams then end. Returns the final snapshot, or null when it was final already.
    /// </summary>
    public PredictionView? Finish(Func<PredictionView, PredictionView> finish, Func<PredictionView, IEnumerable<ServerEvent>> events)
    {
        PredictionView final;
        lock (gate)
        {
            if (view.IsTerminal)
            {
                return null;
            }

            view = finish(view);
            final = Snapshot();
            foreach (ServerEvent e in events(final))
            {
                PublishLocked(e);
            }

            foreach (Channel<ServerEvent> subscriber in subscribers)
            {
                subscriber.Writer.TryComplete();
            }

            subscribers.Clear();
        }

        return final;
    }

    /// <summary>Lets waiters go, after the final snapshot is stored.</summary>
    public void Release(PredictionView final) => completion.TrySetResult(final);

    public void Dispose()
    {
        Abort.Dispose();
        Timeout?.Dispose();
    }

    private PredictionView Snapshot() => view with { Logs = logs.ToString() };

    private void PublishLocked(ServerEvent e)
    {
        foreach (Channel<ServerEvent> subscriber in subscribers)
        {
            subscriber.Writer.TryWrite(e);
        }
    }
}
