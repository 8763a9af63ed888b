using System.Collections.Concurrent;
using System.Diagnostics;
using Xunit.Abstractions;

namespace FluxNative.Server.Tests;

/// <summary>
/// The job queue's contract, on each store (<see cref="PredictionStoreContractTests"/>): leases, their expiry and renewal,
/// batches of one key, and an outcome recorded exactly once. "Workers" are store instances of their own in this process
/// (for PostgreSQL each has its own connection pool, as separate nodes have).
/// </summary>
public sealed class JobLeaseContractTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Long = TimeSpan.FromMinutes(5);

    /// <summary>A job's payload: opaque to the store, given back as it was.</summary>
    private const string Spec = """{"prompt":"a red fox","seed":42}""";

    [Theory]
    [InlineData(StoreKind.Sqlite)]
    [PostgresData(StoreKind.Postgres)]
    public void A_worker_leases_the_oldest_job_with_its_batch_companions_and_another_worker_gets_the_rest(StoreKind kind)
    {
        using var database = new TestDatabase(kind);
        using var api = database.Open();
        using var one = database.Open();
        using var two = database.Open();
        DateTimeOffset now = DateTimeOffset.UtcNow;
        (string Id, string Key)[] queued = [("job00000000a", "64x64"), ("job00000000b", "128x128"), ("job00000000c", "64x64"), ("job00000000d", "64x64"), ("job00000000e", "64x64")];
        foreach ((string id, string key) in queued)
        {
            api.Value.Enqueue(PredictionStoreContractTests.Sample(id, now), key, Spec);
        }

        IReadOnlyList<LeasedJob> first = one.Value.Lease("worker-1", 3, Long);
        Assert.Equal(["job00000000a", "job00000000c", "job00000000d"], first.Select(j => j.Id));
        Assert.All(first, j => Assert.Equal(("64x64", 1), (j.BatchKey, j.Attempt)));
        Assert.Equal(PredictionStoreContractTests.Sample("job00000000a", now).Input, first[0].Prediction.Input);
        Assert.All(first, j => Assert.Equal(Spec, j.Spec));

        IReadOnlyList<LeasedJob> second = two.Value.Lease("worker-2", 3, Long);
        Assert.Equal(["job00000000b"], second.Select(j => j.Id));
        Assert.Equal(["job00000000e"], two.Value.Lease("worker-2", 3, Long).Select(j => j.Id));
        Assert.Empty(one.Value.Lease("worker-1", 3, Long));

        QueueState state = api.Value.Queue();
        Assert.Equal((0, 5, 2), (state.Waiting, state.Leased, state.Workers));
        Assert.NotNull(state.OldestLease);
        Assert.InRange(state.OldestLease.Value, TimeSpan.Zero, TimeSpan.FromMinutes(1));
    }

    [Theory]
    [InlineData(StoreKind.Sqlite)]
    [PostgresData(StoreKind.Postgres)]
    public void A_job_whose_lease_ran_out_runs_again_elsewhere_and_only_the_new_holder_records_its_outcome(StoreKind kind)
    {
        using var database = new TestDatabase(kind);
        using var dead = database.Open();
        using var alive = database.Open();
        PredictionView p = PredictionStoreContractTests.Sample("lost00000001", DateTimeOffset.UtcNow);
        dead.Value.Enqueue(p, "64x64", Spec);
        LeasedJob stale = Assert.Single(dead.Value.Lease("worker-dead", 1, TimeSpan.FromMilliseconds(200)));
        Assert.Empty(alive.Value.Lease("worker-alive", 1, Long));   // held: not free yet

        Thread.Sleep(400);
        Assert.Equal(1, alive.Value.Queue().Waiting);
        LeasedJob again = Assert.Single(alive.Value.Lease("worker-alive", 1, Long));
        Assert.Equal((p.Id, 2), (again.Id, again.Attempt));

        // The first worker comes back (it only stalled): its lease is gone, it can neither renew nor record.
        Assert.Empty(dead.Value.Renew("worker-dead", [stale], Long).Held);
        Assert.False(dead.Value.Complete("worker-dead", stale, Final(p, "from the stale worker")));
        Assert.True(alive.Value.Complete("worker-alive", again, Final(p, "from the live worker")));
        Assert.False(alive.Value.Complete("worker-alive", again, Final(p, "twice")));

        PredictionView recorded = alive.Value.Get(p.Id)!;
        Assert.Equal(PredictionStatus.Succeeded, recorded.Status);
        Assert.Equal("from the live worker", recorded.Logs);
        Assert.Equal(new QueueState(0, 0, 0, null), alive.Value.Queue());
        Assert.Empty(dead.Value.Lease("worker-dead", 1, Long));
    }

    [Theory]
    [InlineData(StoreKind.Sqlite)]
    [PostgresData(StoreKind.Postgres)]
    public void A_renewed_lease_is_kept_past_its_first_expiry(StoreKind kind)
    {
        using var database = new TestDatabase(kind);
        using var holder = database.Open();
        using var other = database.Open();
        PredictionView p = PredictionStoreContractTests.Sample("kept00000001", DateTimeOffset.UtcNow);
        holder.Value.Enqueue(p, "64x64", Spec);
        TimeSpan lease = TimeSpan.FromMilliseconds(300);
        LeasedJob job = Assert.Single(holder.Value.Lease("worker-1", 1, lease));
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < TimeSpan.FromMilliseconds(900))
        {
            Assert.Equal([p.Id], holder.Value.Renew("worker-1", [job], lease).Held);
            Assert.Empty(other.Value.Lease("worker-2", 1, lease));
            Thread.Sleep(100);
        }

        Assert.True(holder.Value.Complete("worker-1", job, Final(p, "done")));
        Assert.Equal(PredictionStatus.Succeeded, other.Value.Get(p.Id)!.Status);
    }

    [Theory]
    [InlineData(StoreKind.Sqlite)]
    [PostgresData(StoreKind.Postgres)]
    public void Workers_racing_for_the_queue_complete_every_job_exactly_once(StoreKind kind)
    {
        const int Jobs = 200, Workers = 4;
        using var database = new TestDatabase(kind);
        using var api = database.Open();
        DateTimeOffset now = DateTimeOffset.UtcNow;
        for (int i = 0; i < Jobs; i++)
        {
            api.Value.Enqueue(PredictionStoreContractTests.Sample($"race{i:D8}", now.AddTicks(i * 10)), i % 3 == 0 ? "64x64" : "128x128", Spec);
        }

        var completed = new ConcurrentBag<string>();
        int leases = 0;
        var clock = Stopwatch.StartNew();
        Parallel.For(0, Workers, new ParallelOptions { MaxDegreeOfParallelism = Workers }, w =>
        {
            // PostgreSQL: a store (a connection pool) per worker, as nodes have. SQLite: the workers of one process share
            // its store (one server per file; separate connections would only wait on the file's lock).
            using var own = kind == StoreKind.Postgres ? database.Open() : null;
            IPredictionStore store = own?.Value ?? api.Value;
            string worker = $"worker-{w}";
            while (store.Lease(worker, 3, Long) is { Count: > 0 } batch)
            {
                Interlocked.Increment(ref leases);
                Assert.All(batch, j => Assert.Equal(batch[0].BatchKey, j.BatchKey));
                foreach (LeasedJob job in batch)
                {
                    Assert.True(store.Complete(worker, job, Final(job.Prediction, worker)));
                    completed.Add(job.Id);
                }
            }
        });
        clock.Stop();

        Assert.Equal(Jobs, completed.Count);
        Assert.Equal(Jobs, completed.Distinct().Count());
        Assert.Equal(new QueueState(0, 0, 0, null), api.Value.Queue());
        Assert.Empty(api.Value.Unfinished());
        // Not a benchmark (the machine is shared, nothing is asserted): what leasing and recording cost here, for the record.
        output.WriteLine($"{kind}: {Jobs} jobs in {leases} leases by {Workers} workers in {clock.Elapsed.TotalMilliseconds:F0} ms");

        // One worker alone, one job a lease: the latency of a lease plus a complete.
        for (int i = 0; i < 50; i++)
        {
            api.Value.Enqueue(PredictionStoreContractTests.Sample($"solo{i:D8}", now), "64x64", Spec);
        }

        clock.Restart();
        while (api.Value.Lease("solo", 1, Long) is [LeasedJob only])
        {
            Assert.True(api.Value.Complete("solo", only, Final(only.Prediction, "solo")));
        }

        output.WriteLine($"{kind}: one worker, 50 jobs one at a time: {clock.Elapsed.TotalMilliseconds / 50:F2} ms a job (lease + complete)");
    }

    [Theory]
    [InlineData(StoreKind.Sqlite)]
    [PostgresData(StoreKind.Postgres)]
    public void A_waiting_job_is_stopped_at_once_and_a_held_one_through_its_workers_heartbeat(StoreKind kind)
    {
        using var database = new TestDatabase(kind);
        using var api = database.Open();
        using var worker = database.Open();
        DateTimeOffset now = DateTimeOffset.UtcNow;
        PredictionView running = PredictionStoreContractTests.Sample("stop00000001", now);
        PredictionView waiting = PredictionStoreContractTests.Sample("stop00000002", now.AddTicks(10));
        api.Value.Enqueue(running, "1024x1024", Spec);
        api.Value.Enqueue(waiting, "64x64", Spec);
        LeasedJob held = Assert.Single(worker.Value.Lease("worker-1", 1, Long));
        Assert.Equal(running.Id, held.Id);
        Assert.Empty(worker.Value.Renew("worker-1", [held], Long).Aborts);

        PredictionView canceled = waiting with { Status = PredictionStatus.Canceled, CompletedAt = DateTimeOffset.UtcNow, Logs = "Canceled.\n" };
        Assert.Equal(AbortOutcome.Finished, api.Value.Abort(waiting.Id, canceled));
        PredictionStoreContractTests.AssertSame(canceled, api.Value.Get(waiting.Id));
        Assert.Empty(worker.Value.Lease("worker-2", 5, Long));   // it left the queue

        PredictionView timedOut = running with { Status = PredictionStatus.Failed, Error = "The prediction timed out: …", CompletedAt = DateTimeOffset.UtcNow };
        Assert.Equal(AbortOutcome.Requested, api.Value.Abort(running.Id, timedOut));
        Assert.Equal(PredictionStatus.Starting, api.Value.Get(running.Id)!.Status);   // the worker records it
        LeaseRenewal renewal = worker.Value.Renew("worker-1", [held], Long);
        Assert.Equal([running.Id], renewal.Held);
        Assert.Equal(new JobAbort(PredictionStatus.Failed, "The prediction timed out: …"), renewal.Aborts[running.Id]);
        Assert.True(worker.Value.Complete("worker-1", held, timedOut));
        Assert.Equal(AbortOutcome.NoJob, api.Value.Abort(running.Id, timedOut));
        Assert.Equal(new QueueState(0, 0, 0, null), api.Value.Queue());
    }

    private static PredictionView Final(PredictionView p, string logs) =>
        p with { Status = PredictionStatus.Succeeded, Output = ["out-0.webp"], Logs = logs, StartedAt = p.CreatedAt, CompletedAt = DateTimeOffset.UtcNow };
}
