namespace FluxNative.Server;

/// <summary>
/// A queued prediction a worker holds for a while (its lease): <see cref="Attempt"/> counts the leases it has had (1 on
/// its first run, 2 when a worker died with it and another took it up, …). The pair (worker, attempt) is the lease's
/// token: only its holder can renew it or record the outcome (<see cref="IPredictionStore.Complete"/>), so a worker that
/// lost its lease (it stalled past the expiry and another took the job) cannot record a second outcome.
/// </summary>
/// <param name="Prediction">The prediction as stored when it was leased.</param>
/// <param name="BatchKey">Jobs with one key can share a batch (one image size).</param>
/// <param name="Attempt">The leases this job has had, this one included.</param>
/// <param name="Spec">What the worker runs (the API node's checked request, as JSON; the seed resolved, so a run again after a crash makes the same images).</param>
internal sealed record LeasedJob(PredictionView Prediction, string BatchKey, int Attempt, string Spec)
{
    public string Id => Prediction.Id;
}

/// <summary>What a heartbeat found: the jobs the worker still holds, and among them those asked to stop (with the final state to record: canceled, or failed as timed out).</summary>
internal sealed record LeaseRenewal(IReadOnlyList<string> Held, IReadOnlyDictionary<string, JobAbort> Aborts);

/// <summary>Why a queued or running job is to stop: the status and error its prediction ends with.</summary>
internal sealed record JobAbort(string Status, string? Error);

/// <summary>What <see cref="IPredictionStore.Abort"/> did.</summary>
internal enum AbortOutcome
{
    /// <summary>No job: the prediction is final already (or unknown).</summary>
    NoJob,

    /// <summary>The job was waiting: it left the queue and the prediction is final now.</summary>
    Finished,

    /// <summary>A worker runs the job: it is asked to stop (at its next heartbeat) and records the final state.</summary>
    Requested,
}

/// <summary>The job queue at one moment, for health and metrics: jobs waiting, jobs leased, the workers holding them, the oldest lease's age.</summary>
internal sealed record QueueState(int Waiting, int Leased, int Workers, TimeSpan? OldestLease);
