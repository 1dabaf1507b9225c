#include "federated/fed_job.h"

#include <chrono>
#include <cmath>

#include "core/comm/world.h"
#include "core/data/client_data.h"
#include "core/model/hf.h"
#include "core/tokenizer/tokenizer.h"
#include "core/util/error.h"
#include "core/util/fs.h"
#include "core/util/log.h"
#include "core/util/memory.h"
#include "core/util/metrics.h"
#include "core/util/threads.h"
#include "federated/client_host.h"
#include "federated/client_setup.h"
#include "federated/hierarchy.h"
#include "federated/sampling.h"
#include "federated/server.h"
#include "federated/server_checkpoint.h"

namespace fedsplit {
namespace {

using Clock = std::chrono::steady_clock;

void check_options(const FederatedJobOptions& o) {
  const auto& f = o.fed;
  if ((f.partition.scheme == "natural" || f.partition.scheme == "dirichlet") && f.partition_key.empty())
    throw ConfigError("federated.partition = " + f.partition.scheme +
                      " needs federated.partition_key (a metadata key, e.g. president for sotu, genre for brown)");
  if (f.lora_aggregation != "fedavg") {
    if (o.peft.method != "lora")
      throw ConfigError("federated.lora_aggregation = " + f.lora_aggregation + " needs peft.method = lora (got " +
                        o.peft.method + ")");
    if (!o.peft.rank_pattern.empty() || !o.peft.alpha_pattern.empty())
      throw ConfigError("federated.lora_aggregation = " + f.lora_aggregation +
                        " needs one rank and alpha for every module: clear peft.rank_pattern and peft.alpha_pattern");
  } else if (!f.client_ranks.empty()) {
    throw ConfigError("federated.client_ranks needs federated.lora_aggregation = hetlora, flora or ffa "
                      "(fedavg averages A and B of one shape)");
  }
  if (o.robust.rule != "none") check_robust_options(o.robust);
  const std::string lora_aggregation = o.peft.method == "lora" ? f.lora_aggregation : "fedavg";
  if (!o.topology.enabled()) {
    check_secure_options(o.secure, o.privacy, o.robust.rule, lora_aggregation);
  } else {
    if (f.lora_aggregation == "flora")
      throw ConfigError("federated.lora_aggregation = flora merges every round into the base, which edges cannot share: use fedavg, hetlora or ffa");
    check_tier_options(o.topology, o.secure, o.privacy, o.robust.rule, lora_aggregation);
  }
  if (f.backend == "nccl" && o.lm.run.device == "cpu")
    throw ConfigError("federated.backend = nccl moves CUDA tensors: set run.device = cuda (one GPU per rank), or use gloo");
  if (f.lora_aggregation == "flora" && (f.server.rule != "fedavg" || f.server.lr != 1.0))
    throw ConfigError("federated.lora_aggregation = flora merges the exact stacked update each round: use "
                      "federated.server_optimizer = fedavg with federated.server_lr = 1");
  if (f.min_clients > sample_size(f.partition.clients, f.sample_fraction, f.sample_count) &&
      f.partition.scheme != "natural")
    throw ConfigError("federated.min_clients = " + std::to_string(f.min_clients) +
                      " exceeds the clients sampled per round: lower it or sample more");
}

// Broadcasts rank 0's message to every rank; returns its encoded size.
int64_t share(World& world, Message& message) {
  std::string bytes = world.rank() == 0 ? encode_message(message) : std::string();
  world.broadcast_bytes(bytes, 0);
  if (world.rank() != 0) message = decode_message(bytes, "the server (rank 0)");
  return static_cast<int64_t>(bytes.size());
}

LocalTrainingOptions client_training(const FederatedJobOptions& o) {
  LocalTrainingOptions t;
  t.optimizer = o.fed.client_optimizer;
  t.lr = o.lm.train.lr;
  t.momentum = o.fed.client_momentum;
  t.beta1 = o.lm.train.beta1;
  t.beta2 = o.lm.train.beta2;
  t.eps = o.lm.train.eps;
  t.weight_decay = o.lm.train.weight_decay;
  t.grad_clip = o.lm.train.grad_clip;
  t.fedprox_mu = o.fed.fedprox_mu;
  t.bf16 = o.lm.train.bf16;
  t.dp_sgd = o.privacy.local_dp_sgd;
  t.dp_clip = o.privacy.example_clip;
  t.dp_noise_multiplier = o.privacy.example_noise_multiplier;
  t.loss = o.client_loss;
  return t;
}

// Tells every client rank that the job ends ("done") or fails ("stop").
void tell(World& world, const std::string& kind) {
  Message m;
  m.meta = {{"kind", kind}};
  share(world, m);
}

// A client rank: follows the server's messages, training the sampled clients it hosts, until the
// server says the job is over.
void follow_server(World& world, Participant& participant, ClientHost& host, int64_t num_clients, int64_t per_round,
                   uint64_t seed, const SecureRoundContext* secure) {
  while (true) {
    Message m;
    share(world, m);
    const std::string kind = m.meta.at("kind");
    if (kind == "start") {
      participant.load(m.tensors);
      TensorMap base;
      for (const auto& [name, t] : m.tensors)
        if (name.rfind("base/", 0) == 0) base[name.substr(5)] = t;
      if (!base.empty()) participant.load_base_weights(base);
      continue;
    }
    if (kind != "round") return;
    host.on_round(m);
    const int64_t round = m.meta.at("round"), attempt = m.meta.at("attempt");
    const auto sample = sample_clients(num_clients, per_round, seed, round, attempt);
    if (secure) {
      run_secure_round(world, host, *secure, sample, round, attempt);
      continue;
    }
    for (int64_t c : sample)
      if (host_rank(c, world.size()) == world.rank()) world.send_bytes(host.train_client(c), 0);
  }
}

// The server's round: sample, broadcast, collect every sampled client's update (from this process in a
// world of one), aggregate; retried with a new sample while fewer than min_clients updates pass.
RoundReport serve_round(World& world, Server& server, ClientHost& host, const FederatedOptions& f, int64_t round,
                        int64_t num_clients, int64_t per_round, uint64_t seed, const std::string& ckpt_path,
                        const SecureRoundContext* secure) {
  for (int64_t attempt = 0;; ++attempt) {
    const auto sample = sample_clients(num_clients, per_round, seed, round, attempt);
    Message m = server.round_message(round, attempt);
    const int64_t round_bytes = share(world, m);
    server.begin_round(round, attempt, sample, round_bytes);
    host.on_round(m);
    RoundReport report;
    if (secure) {
      report = server.finish_secure_round(*run_secure_round(world, host, *secure, sample, round, attempt));
    } else {
      if (world.size() == 1) {
        for (int64_t c : sample) server.receive(host.train_client(c), c, 0);
      } else {
        for (int r = 1; r < world.size(); ++r)
          for (int64_t c : sample)
            if (host_rank(c, world.size()) == r) server.receive(world.recv_bytes(r), c, r);
      }
      report = server.finish_round();
    }
    if (report.complete) return report;
    const std::string why = "round " + std::to_string(round + 1) + " (attempt " + std::to_string(attempt + 1) + "): " +
                            std::to_string(report.aggregated) + " valid updates, fewer than federated.min_clients = " +
                            std::to_string(f.min_clients);
    if (attempt >= f.round_retries) {
      tell(world, "stop");
      throw Error(why + " after " + std::to_string(attempt + 1) + " attempts; " + ckpt_path +
                  " holds the last good round: fix the clients (see the log) or lower federated.min_clients, then --resume");
    }
    log_warn(why, ": retrying with a new sample");
  }
}

}  // namespace

FederatedResult run_federated_job(const FederatedJobOptions& o, const std::string& recipe_ini, bool resume) {
  check_options(o);
  auto adaptation = peft_adaptation(o.peft);
  if (adaptation && o.lm.model.init.empty())
    throw ConfigError("peft.method = " + o.peft.method + " fine-tunes a trained model: set model.init to its HF directory");
  CommOptions comm;
  // A CPU run moves its tensors over Gloo even on a machine with GPUs.
  comm.backend = o.fed.backend == "auto" && o.lm.run.device == "cpu" ? "gloo" : o.fed.backend;
  comm.timeout_s = o.fed.comm_timeout_s;
  auto world = World::create(comm);
  set_log_rank(world->rank());
  const bool is_server = world->rank() == 0;
  if (world->size() > 1 && o.fed.partition.scheme != "natural" && o.fed.partition.clients < world->size() - 1)
    log_warn("only ", o.fed.partition.clients, " clients for ", world->size() - 1, " client ranks: some ranks stay idle");
  set_cpu_threads(o.lm.run.threads);
  const uint64_t seed = static_cast<uint64_t>(o.lm.run.seed);
  torch::manual_seed(seed);
  const torch::Device device = world->backend() == "nccl" ? world->device() : pick_device(o.lm.run.device);
  const std::string ckpt_path = o.lm.run.dir + "/checkpoint.h5";

  RunData run_data = resolve_run_data(*world, o.lm, recipe_ini, resume);
  const Tokenizer& tokenizer = *run_data.tokenizer;
  const std::vector<std::string>& shard_paths = run_data.shard_paths;

  Decoder model = initial_model(o.lm.model, tokenizer, seed);
  if (o.lm.data.seq_len > model->options.max_position)
    throw ConfigError("data.seq_len = " + std::to_string(o.lm.data.seq_len) + " exceeds the model's max_position " +
                      std::to_string(model->options.max_position));
  const int64_t parameters = count_parameters(model);
  if (adaptation && adaptation->prepare_base) adaptation->prepare_base(model);
  model->to(device);
  if (adaptation) adaptation->apply(model, seed);
  Participant participant(model, device, o.fed.lora_aggregation);
  const int64_t global_rank = participant.has_lora() ? o.peft.r : 0;
  ClientData clients = build_clients(o.lm, o.fed, o.attack, o.topology.grouping == "key" ? o.topology.group_key : "",
                                     shard_paths, global_rank, world->size());
  for (auto& d : clients.datasets) d.check_vocab(model->options.vocab_size);
  const auto num_clients = static_cast<int64_t>(clients.roster.names.size());
  const int64_t per_round = sample_size(num_clients, o.fed.sample_fraction, o.fed.sample_count);

  ClientHost host(participant, clients.datasets, clients.roster, client_training(o), o.attack, seed, /*shares_server_model=*/is_server);
  const RobustOptions* robust = o.robust.rule == "none" ? nullptr : &o.robust;
  std::unique_ptr<Hierarchy> hierarchy;
  if (o.topology.enabled())
    hierarchy = std::make_unique<Hierarchy>(*world, build_topology(o.topology, clients.roster.names, clients.groups), o.topology,
                                            participant, clients.roster, o.fed, global_rank,
                                            TierProtection{robust, o.privacy, o.secure}, seed);
  std::unique_ptr<UpdateEncoding> encoding;
  std::unique_ptr<SecureRoundContext> secure;
  if (o.secure.aggregation != "none" && !hierarchy) {
    encoding = std::make_unique<UpdateEncoding>(participant.update_shapes(global_rank), o.secure.range,
                                                secure_sum_bound(o.secure, o.privacy, per_round));
    secure.reset(new SecureRoundContext{o.secure, o.privacy, clients.roster, *encoding, o.fed.min_clients, o.fed.deadline_s,
                                        o.fed.link, seed});
  }

  if (!is_server) {
    if (hierarchy)
      hierarchy->follow(host);
    else
      follow_server(*world, participant, host, num_clients, per_round, seed, secure.get());
    return {};
  }

  log_info("federated: ", num_clients, " clients (", o.fed.partition.scheme, "), ", per_round, " per round, ",
           o.fed.rounds, " rounds, world of ", world->size(), " (", world->backend(), "), on ", device.str());
  if (hierarchy) {
    nlohmann::json edges = nlohmann::json::object();
    for (size_t e = 0; e < hierarchy->topology().edge_names.size(); ++e) {
      nlohmann::json members = nlohmann::json::array();
      for (int64_t c : hierarchy->topology().devices[e]) {
        members.push_back(clients.roster.names[static_cast<size_t>(c)]);
        clients.partition_file["client_list"][static_cast<size_t>(c)]["host_rank"] = hierarchy->device_rank(c);
      }
      edges[hierarchy->topology().edge_names[e]] = members;
    }
    clients.partition_file["edges"] = edges;
    log_info("hierarchy: ", edges.size(), " edges, ", o.topology.edge_rounds, " edge rounds per cloud round");
  }
  write_text_atomically(o.lm.run.dir + "/partition.json", clients.partition_file.dump(1) + "\n");

  const bool robust_at_cloud = !hierarchy || o.topology.robust_tier != "edge";
  const bool privacy_at_cloud = !hierarchy || o.topology.privacy_tier != "edge";
  Server server(participant, hierarchy ? hierarchy->edge_roster() : clients.roster, hierarchy ? hierarchy->cloud_options() : o.fed,
                global_rank, robust_at_cloud ? robust : nullptr, privacy_at_cloud ? &o.privacy : nullptr, seed);
  int64_t start_round = 0;
  nlohmann::json totals{{"bytes_up", 0}, {"bytes_down", 0}, {"sim_s", 0.0}, {"wall_s", 0.0}};
  if (resume) {
    const ServerCheckpoint ckpt = load_server_checkpoint(ckpt_path);
    start_round = ckpt.round;
    for (auto& [name, t] : server.global()) {
      const auto it = ckpt.global.find(name);
      if (it == ckpt.global.end() || !it->second.sizes().equals(t.sizes()))
        throw FormatError(ckpt_path + ": global tensor " + name + " is missing or has another shape: it belongs to another run");
      t = it->second;
    }
    server.optimizer().load_state(ckpt.optimizer_state, ckpt.optimizer_rounds);
    if (!ckpt.base.empty()) participant.load_base_weights(ckpt.base);
    totals = nlohmann::json::parse(ckpt.extra);
    server.load_state(totals);
    if (hierarchy && totals.contains("edges")) hierarchy->load_edge_states(totals["edges"]);
    log_info("resuming ", ckpt_path, " after round ", start_round);
  }
  Message start;
  start.meta = {{"kind", "start"}, {"round", start_round}};
  start.tensors = server.global();
  if (participant.lora_aggregation() == "flora")
    for (const auto& [name, t] : participant.base_weights()) start.tensors["base/" + name] = t;
  if (!hierarchy) share(*world, start);  // edges and devices start from each cloud round's model

  auto end_followers = [&](const std::string& kind) {
    if (hierarchy)
      hierarchy->end(kind);
    else
      tell(*world, kind);
  };
  MetricsWriter metrics(o.lm.run.dir + "/metrics.jsonl", /*truncate=*/!resume);
  nlohmann::json eval = nlohmann::json::object();
  auto evaluate = [&](int64_t round) {
    participant.load(server.global());
    eval = evaluate_clients(participant.model(), participant.device(), clients, o.lm.train.bf16);
    eval["event"] = "eval";
    eval["round"] = round;
    metrics.write(eval);
    log_info("round ", round, ": held-out perplexity ", eval["val_ppl"].get<double>());
  };
  if (start_round == 0) {
    evaluate(0);
    totals["base_val_loss"] = eval["val_loss"];
  }
  const auto job_start = Clock::now();
  auto traffic = [&] { return hierarchy ? hierarchy->cloud_traffic() : world->traffic(); };
  const TrafficStats traffic_start = traffic();
  for (int64_t round = start_round; round < o.fed.rounds; ++round) {
    const auto t0 = Clock::now();
    const TrafficStats wire0 = traffic();
    const RoundReport report =
        hierarchy ? hierarchy->serve_round(server, host, round)
                  : serve_round(*world, server, host, o.fed, round, num_clients, per_round, seed, ckpt_path, secure.get());
    const TrafficStats wire1 = traffic();
    const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
    totals["bytes_up"] = totals["bytes_up"].get<int64_t>() + report.bytes_up;
    totals["bytes_down"] = totals["bytes_down"].get<int64_t>() + report.bytes_down;
    totals["sim_s"] = totals["sim_s"].get<double>() + report.sim_round_s;
    totals["wall_s"] = totals["wall_s"].get<double>() + wall;
    metrics.write({{"event", "round"}, {"round", round + 1}, {"attempt", report.attempt}, {"clients_sampled", report.sampled},
                   {"clients_aggregated", report.aggregated}, {"excluded", report.excluded}, {"robust", report.robust}, {"privacy", report.privacy}, {"secure", report.secure}, {"tiers", report.tiers},
                   {"train_loss", report.train_loss}, {"bytes_up", report.bytes_up}, {"bytes_down", report.bytes_down},
                   {"wire_bytes_sent", wire1.bytes_sent - wire0.bytes_sent},
                   {"wire_bytes_received", wire1.bytes_received - wire0.bytes_received},
                   {"sim_network_s", report.sim_network_s}, {"sim_round_s", report.sim_round_s},
                   {"client_compute_s", report.client_wall_s}, {"wall_s", wall},
                   {"sim_elapsed_s", totals["sim_s"]}, {"elapsed_wall_s", totals["wall_s"]}});
    log_info("round ", round + 1, "/", o.fed.rounds, ": ", report.aggregated, "/", report.sampled,
             " clients, train loss ", report.train_loss, ", ", report.bytes_up, " bytes up, ", wall, " s",
             report.privacy.contains("epsilon") ? ", epsilon " + report.privacy["epsilon"].dump() : "",
             report.privacy.contains("local") ? ", local DP-SGD epsilon " + report.privacy["local"]["epsilon_max"].dump() : "");
    if (report.privacy.contains("epsilon")) totals["epsilon"] = report.privacy["epsilon"];
    if (report.privacy.contains("local")) totals["local_epsilon_max"] = report.privacy["local"]["epsilon_max"];
    if (report.tiers.contains("device_edge") && report.tiers["device_edge"].contains("epsilon_max"))
      totals["edge_epsilon_max"] = report.tiers["device_edge"]["epsilon_max"];
    const bool last = round + 1 == o.fed.rounds;
    if (last || (round + 1) % o.fed.eval_every == 0) evaluate(round + 1);
    ServerCheckpoint ckpt;
    ckpt.round = round + 1;
    ckpt.optimizer_rounds = server.optimizer().rounds();
    ckpt.recipe = recipe_ini;
    totals.update(server.state());
    if (hierarchy) totals["edges"] = hierarchy->edge_states();
    ckpt.extra = totals.dump();
    ckpt.global = server.global();
    ckpt.optimizer_state = server.optimizer().state();
    if (participant.lora_aggregation() == "flora") ckpt.base = participant.base_weights();
    save_server_checkpoint(ckpt_path, ckpt);
    if (o.lm.run.stop_after > 0 && round + 1 >= o.lm.run.stop_after && !last) {
      log_info("stopped after round ", round + 1, " (run.stop_after): continue with --resume");
      end_followers("done");
      return {round + 1, eval.value("val_loss", std::nan(""))};
    }
  }
  end_followers("done");
  if (start_round >= o.fed.rounds) log_info("the checkpoint is already at round ", start_round, ": nothing to do");
  if (!eval.contains("val_loss")) evaluate(o.fed.rounds);

  // The result: the global model (full FedAvg, or flora's merged base) or the global adapter.
  participant.load(server.global());
  model->to(torch::kCPU);
  nlohmann::json summary{{"rounds", o.fed.rounds}, {"clients", num_clients}, {"clients_per_round", per_round},
                         {"world_size", world->size()}, {"backend", world->backend()},
                         {"val_loss", eval["val_loss"]}, {"val_ppl", eval["val_ppl"]}, {"client_ppl", eval["client_ppl"]},
                         {"parameters", parameters}, {"trainable_parameters", trainable_count(*model)},
                         {"update_bytes_per_client", payload_bytes(server.global())},
                         {"bytes_up", totals["bytes_up"]}, {"bytes_down", totals["bytes_down"]},
                         {"sim_elapsed_s", totals["sim_s"]}, {"elapsed_wall_s", totals["wall_s"]},
                         {"wire_bytes_sent", traffic().bytes_sent - traffic_start.bytes_sent},
                         {"job_wall_s", std::chrono::duration<double>(Clock::now() - job_start).count()},
                         {"peak_host_memory_bytes", peak_host_memory_bytes()},
                         {"peak_cuda_memory_bytes", peak_cuda_memory_bytes()}};
  if (hierarchy)
    summary.update({{"edges", hierarchy->topology().edge_names.size()}, {"edge_rounds", o.topology.edge_rounds},
                    {"bytes_note", "bytes_up/down: the edge-cloud links (device-edge bytes per round are in metrics.jsonl tiers)"}});
  if (totals.contains("epsilon")) summary.update({{"epsilon", totals["epsilon"]}, {"delta", o.privacy.delta}});
  if (totals.contains("edge_epsilon_max"))
    summary.update({{"edge_epsilon_max", totals["edge_epsilon_max"]}, {"delta", o.privacy.delta}});
  if (totals.contains("local_epsilon_max"))
    summary.update({{"local_epsilon_max", totals["local_epsilon_max"]}, {"delta", o.privacy.delta}});
  if (totals.contains("base_val_loss"))
    summary.update({{"base_val_loss", totals["base_val_loss"]}, {"base_val_ppl", std::exp(totals["base_val_loss"].get<double>())}});
  if (adaptation && participant.lora_aggregation() != "flora") {
    const std::string out = o.lm.run.dir + "/adapter";
    adaptation->save(model, out);
    log_info("saved the global adapter to ", out, " (use it with --model ", o.lm.model.init, " --adapter ", out, ")");
  } else {
    if (participant.has_lora()) merge_and_unload(model);
    const std::string out = o.lm.run.dir + "/model";
    make_dirs(out);
    save_hf_model(model, out);
    copy_tokenizer(tokenizer, out);
    log_info("saved the global model and tokenizer to ", out);
  }
  write_text_atomically(o.lm.run.dir + "/summary.json", summary.dump(2) + "\n");
  return {o.fed.rounds, eval["val_loss"].get<double>()};
}

}  // namespace fedsplit
