namespace FluxNative.Tests.Sampling;

public class FluxScheduleTests
{
    // docs/flux-model.md §6.1: dev, 1024x1024 (4096 tokens, mu = 1.15), 28 steps, to six decimals.
    private static readonly double[] Dev28At1024 =
    [
        1.000000, 0.988409, 0.976222, 0.963394, 0.949873, 0.935599, 0.920509, 0.904531, 0.887583, 0.869576, 0.850406,
        0.829956, 0.808095, 0.784672, 0.759511, 0.732413, 0.703145, 0.671435, 0.636965, 0.599357, 0.558163, 0.512844,
        0.462748, 0.407078, 0.344849, 0.274828, 0.195455, 0.104721, 0.000000,
    ];

    [Fact]
    public void Dev_schedule_matches_the_spec_table()
    {
        double[] t = FluxSchedule.Timesteps(28, 4096, shift: true);
        Assert.Equal(29, t.Length);
        for (int i = 0; i < t.Length; i++)
        {
            Assert.True(Math.Abs(t[i] - Dev28At1024[i]) < 1.5e-6, $"t[{i}] = {t[i]:F7}, spec {Dev28At1024[i]:F6}");
        }
    }

    [Fact]
    public void Dev_schedule_with_50_steps_starts_as_the_spec_says()
    {
        double[] t = FluxSchedule.Timesteps(50, 4096, shift: true);
        double[] spec = [1.000000, 0.993580, 0.986979, 0.980190, 0.973204, 0.966014];
        for (int i = 0; i < spec.Length; i++)
        {
            Assert.True(Math.Abs(t[i] - spec[i]) < 1.5e-6, $"t[{i}] = {t[i]:F7}, spec {spec[i]:F6}");
        }

        Assert.Equal(0.0, t[^1]);
    }

    [Fact]
    public void Schnell_schedule_is_the_plain_linspace()
    {
        Assert.Equal([1.0, 0.75, 0.5, 0.25, 0.0], FluxSchedule.Timesteps(4, 4096, shift: false));
    }

    [Theory]
    [InlineData(256, 0.5)]
    [InlineData(4096, 1.15)]
    [InlineData(4080, 1.1472917)]   // 1360x768, BFL's CLI default
    [InlineData(8192, 1.8433333)]   // extrapolated, not clamped
    public void Mu_is_the_line_through_the_spec_points(int tokens, double mu)
    {
        Assert.True(Math.Abs(FluxSchedule.Mu(tokens) - mu) < 1e-6, $"mu({tokens}) = {FluxSchedule.Mu(tokens)}");
    }

    [Fact]
    public void Shifted_schedule_decreases_strictly_and_keeps_its_endpoints()
    {
        foreach (int tokens in new[] { 1, 12, 1024, 16384 })
        {
            double[] t = FluxSchedule.Timesteps(7, tokens, shift: true);
            Assert.Equal(1.0, t[0]);
            Assert.Equal(0.0, t[^1]);
            for (int i = 1; i < t.Length; i++)
            {
                Assert.True(t[i] < t[i - 1], $"tokens {tokens}: t[{i}] = {t[i]} is not below t[{i - 1}] = {t[i - 1]}");
            }
        }
    }

    [Fact]
    public void Refuses_zero_steps() =>
        Assert.Throws<ArgumentOutOfRangeException>(() => FluxSchedule.Timesteps(0, 4096, shift: true));
}
