namespace FluxNative.Server;

/// <summary>
/// A queued prediction a worker holds for a while (its lease): <see cref="Attempt"/> counts the leases it has had (1 on
/// its first run, 2 when a worker died with it and another took it up, …). The pair (worker, attempt) is the lease's
/// token: only its holder can renew it or record the outcome (<see cref="IPredictionStore.Complete"/>), so a worker that
/// lost its lease (it stalled past the expiry and another took the job) cannot record a second outcome.
/// </summary>
internal sealed record LeasedJob(PredictionView Prediction, string BatchKey, int Attempt)
{
    public string Id => Prediction.Id;
}

/// <summary>The job queue at one moment, for health and metrics: jobs waiting, jobs leased, the workers holding them, the oldest lease's age.</summary>
internal sealed record QueueState(int Waiting, int Leased, int Workers, TimeSpan? OldestLease);
