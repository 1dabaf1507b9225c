#include "split/split_job.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <exception>
#include <random>
#include <thread>

#include "core/comm/link_model.h"
#include "core/comm/world.h"
#include "core/config/recipe.h"
#include "core/model/hf.h"
#include "core/tokenizer/tokenizer.h"
#include "core/util/error.h"
#include "core/util/fs.h"
#include "core/util/log.h"
#include "core/util/memory.h"
#include "core/util/metrics.h"
#include "core/util/threads.h"
#include "federated/client_setup.h"
#include "federated/sampling.h"
#include "federated/server_checkpoint.h"
#include "split/channel.h"
#include "split/local_channel.h"
#include "split/split_session.h"
#include "train/trainer.h"

namespace fedsplit {

void bind_split_options(Recipe& r, SplitSchemeOptions& o) {
  r.add_choice("split.scheme", &o.scheme, {"none", "vanilla", "ushaped", "splitfed1", "splitfed2", "splitlora"},
               "split learning scheme (none = the centralized baseline on the same batches)");
  r.add("split.cut", &o.cut, "the first block on the server: the device keeps the embeddings and blocks before it", 1, 1 << 20);
  r.add("split.tail_cut", &o.tail_cut, "ushaped: the first block back on the device, which also keeps the norm and head (0 = those only)", 0, 1 << 20);
  r.add("split.codec", &o.codec, "activations on the wire: fp32 | fp16 | bf16 | int8 | topk:F (keep the fraction F per token)");
  r.add("split.gradient_codec", &o.gradient_codec, "gradients sent back across the cut (fp32 keeps training exact)");
  r.add("split.noise_sigma", &o.noise_sigma, "Gaussian noise on the smashed data, std relative to the activation's RMS", 0.0, 1e6);
  r.add("split.server_tokens_per_s", &o.server_tokens_per_s, "the server's training speed (whole-model tokens/s) for simulated time", 1e-6, 1e15);
}

namespace {

using Clock = std::chrono::steady_clock;

bool relays(const std::string& scheme) { return scheme == "vanilla" || scheme == "ushaped"; }

void check_options(const SplitJobOptions& o) {
  if (o.split.scheme == "splitlora" && o.peft.method != "lora")
    throw ConfigError("split.scheme = splitlora trains LoRA adapters on both parts: set peft.method = lora");
  if (o.split.scheme != "ushaped" && o.split.tail_cut > 0)
    throw ConfigError("split.tail_cut is the ushaped scheme's: set split.scheme = ushaped or remove split.tail_cut");
  if ((o.fed.partition.scheme == "natural" || o.fed.partition.scheme == "dirichlet") && o.fed.partition_key.empty())
    throw ConfigError("federated.partition = " + o.fed.partition.scheme + " needs federated.partition_key (e.g. president for sotu)");
  if (o.fed.lora_aggregation != "fedavg")
    throw ConfigError("split learning averages LoRA adapters as FedAvg does: leave federated.lora_aggregation = fedavg");
}

// Shares of a training step's compute on the device and on the server: their matrix parameters
// (FLOPs per token are ~6x those; embedding lookups cost next to nothing).
std::pair<double, double> compute_shares(const CutModel& cut) {
  double device = 0, server = 0;
  for (const auto& item : cut.model()->named_parameters()) {
    const std::string& name = item.key();
    if (item.value().dim() < 2 || name.find("embed_tokens") != std::string::npos || name == "wte.weight" || name == "wpe.weight")
      continue;
    (cut.side_of(name) == SplitSide::device ? device : server) += static_cast<double>(item.value().numel());
  }
  return {device / (device + server), server / (device + server)};
}

// The round's turn order: the sampled clients in a seeded order that every rank and scheme shares.
std::vector<int64_t> turn_order(int64_t clients, int64_t per_round, uint64_t seed, int64_t round) {
  auto order = sample_clients(clients, per_round, seed, round, 0);
  std::mt19937_64 rng(client_seed(seed, round, -2));
  std::shuffle(order.begin(), order.end(), rng);
  return order;
}

TensorMap weighted_mean(const std::vector<std::pair<TensorMap, double>>& parts) {
  TensorMap sum;
  double total = 0;
  for (const auto& [weights, w] : parts) {
    total += w;
    for (const auto& [name, t] : weights) {
      auto& s = sum[name];
      s = s.defined() ? s + t * w : t * w;
    }
  }
  for (auto& [name, t] : sum) t /= total;
  return sum;
}

// The tensors of `map` whose names start with `prefix`, without it.
TensorMap with_prefix(const TensorMap& map, const std::string& prefix) {
  TensorMap out;
  for (const auto& [name, t] : map)
    if (name.rfind(prefix, 0) == 0) out[name.substr(prefix.size())] = t;
  return out;
}

// Every turn draws dropout from its own seed, so a resumed run repeats the one that never stopped.
void seed_turn(uint64_t seed, int64_t round, int64_t client) { torch::manual_seed(client_seed(seed, round, client) ^ 0xD50Full); }

// A client rank: trains the device part of each turn rank 0 sends it, until told the job is over.
void host_clients(World& world, Decoder model, const SplitOptions& base, ClientData& clients, const std::string& scheme,
                  uint64_t seed, double lr) {
  while (true) {
    const Message turn = decode_message(world.recv_bytes(0), "the server (rank 0)");
    if (turn.meta.at("kind") != "turn") return;
    const int64_t c = turn.meta.at("client"), round = turn.meta.at("round");
    SplitOptions options = base;
    options.noise.seed = client_seed(seed, round, c) ^ 0x5EEDull;
    seed_turn(seed, round, c);
    SplitDevice device(model, options);
    CutModel view(model, options.cut);
    AdamW* moments = relays(scheme) ? &device.optimizer() : nullptr;
    unpack_device_state(turn, view, moments, "rank 0");
    WorldChannel server(world, 0);
    const SessionTally tally = run_device_session(device, server, clients.datasets[static_cast<size_t>(c)], round,
                                                  clients.roster.local_steps[static_cast<size_t>(c)], lr);
    Message up = pack_device_state(view, moments);
    up.meta.update({{"kind", "state"}, {"client", c}, {"tally", tally.to_json()}});
    world.send_bytes(encode_message(up), 0);
  }
}

struct RoundTotals {
  double loss_sum = 0, sim_s = 0;
  int64_t loss_steps = 0, steps = 0, tokens = 0;
  int64_t cut_up = 0, cut_down = 0, weights_up = 0, weights_down = 0;
  nlohmann::json to_json() const {
    return {{"sim_s", sim_s}, {"steps", steps}, {"tokens", tokens}, {"cut_up", cut_up}, {"cut_down", cut_down},
            {"weights_up", weights_up}, {"weights_down", weights_down}};
  }
  void load(const nlohmann::json& j) {
    sim_s = j.at("sim_s"), steps = j.at("steps"), tokens = j.at("tokens"), cut_up = j.at("cut_up"), cut_down = j.at("cut_down");
    weights_up = j.at("weights_up"), weights_down = j.at("weights_down");
  }
};

}  // namespace

SplitResult run_split_job(const SplitJobOptions& o, const std::string& recipe_ini, bool resume) {
  check_options(o);
  auto adaptation = peft_adaptation(o.peft);
  if (adaptation && o.lm.model.init.empty())
    throw ConfigError("peft.method = " + o.peft.method + " fine-tunes a trained model: set model.init to its HF directory");
  CommOptions comm;
  comm.backend = o.fed.backend == "auto" ? "gloo" : o.fed.backend;  // activations travel as bytes
  comm.timeout_s = o.fed.comm_timeout_s;
  auto world = World::create(comm);
  set_log_rank(world->rank());
  const bool is_server = world->rank() == 0;
  set_cpu_threads(o.lm.run.threads);
  const uint64_t seed = static_cast<uint64_t>(o.lm.run.seed);
  torch::manual_seed(seed);
  const torch::Device device = pick_device(o.lm.run.device);

  RunData run_data = resolve_run_data(*world, o.lm, recipe_ini, resume);
  const Tokenizer& tokenizer = *run_data.tokenizer;
  const std::vector<std::string>& shard_paths = run_data.shard_paths;
  Decoder model = initial_model(o.lm.model, tokenizer, seed);
  if (o.lm.data.seq_len > model->options.max_position)
    throw ConfigError("data.seq_len = " + std::to_string(o.lm.data.seq_len) + " exceeds the model's max_position " +
                      std::to_string(model->options.max_position));
  if (adaptation && adaptation->prepare_base) adaptation->prepare_base(model);
  model->to(device);
  if (adaptation) adaptation->apply(model, seed);
  const int64_t global_rank = o.peft.method == "lora" ? o.peft.r : 0;
  ClientData clients = build_clients(o.lm, o.fed, AttackOptions{}, "", shard_paths, global_rank, world->size());
  for (auto& d : clients.datasets) d.check_vocab(model->options.vocab_size);
  const auto num_clients = static_cast<int64_t>(clients.roster.names.size());
  const int64_t per_round = sample_size(num_clients, o.fed.sample_fraction, o.fed.sample_count);

  const std::string& scheme = o.split.scheme;
  const bool centralized = scheme == "none";
  SplitOptions step;
  step.cut.cut = o.split.cut;
  step.cut.tail_cut = scheme == "ushaped" ? (o.split.tail_cut > 0 ? o.split.tail_cut : model->options.num_layers) : 0;
  step.activation_codec = parse_codec(o.split.codec, "split.codec");
  step.gradient_codec = parse_codec(o.split.gradient_codec, "split.gradient_codec");
  step.noise.sigma = o.split.noise_sigma;
  step.adamw = {o.lm.train.beta1, o.lm.train.beta2, o.lm.train.eps, o.lm.train.weight_decay};
  CutModel view(model, step.cut);  // validates the cut on every rank
  const double lr = o.lm.train.lr;

  if (!is_server) {
    if (!centralized) host_clients(*world, model, step, clients, scheme, seed, lr);
    else decode_message(world->recv_bytes(0), "the server (rank 0)");  // the baseline needs no clients: wait for the end
    return {};
  }

  write_text_atomically(o.lm.run.dir + "/partition.json", clients.partition_file.dump(1) + "\n");
  log_info("split learning (", scheme, "): ", num_clients, " clients, ", per_round, " per round, ", o.fed.rounds,
           " rounds, cut at block ", step.cut.cut, step.cut.u_shaped() ? " and " + std::to_string(step.cut.tail_cut) : "",
           ", activations ", o.split.codec, ", world of ", world->size(), ", on ", device.str());
  std::optional<LinkClass> link;
  if (!o.fed.link.empty()) link = parse_link("client", o.fed.link, "network.link");
  const auto [device_share, server_share] = compute_shares(view);
  const bool per_client_server = scheme == "splitfed1";

  // What rank 0 holds between turns: the round's device part (or the relayed state), the server part.
  Message relay_state = pack_device_state(view, nullptr);
  if (relays(scheme)) {
    SplitDevice fresh(model, step);
    relay_state = pack_device_state(view, &fresh.optimizer());
  }
  TensorMap device_global = side_weights(view, SplitSide::device), server_global = side_weights(view, SplitSide::server);
  std::unique_ptr<SplitServer> shared_server;
  if (!centralized && !per_client_server) shared_server = std::make_unique<SplitServer>(model, step);
  std::vector<std::pair<std::string, torch::Tensor>> all_trainable;
  for (const auto& p : model->named_parameters())
    if (p.value().requires_grad()) all_trainable.emplace_back(p.key(), p.value());
  std::unique_ptr<AdamW> centralized_optimizer;
  if (centralized) centralized_optimizer = std::make_unique<AdamW>(all_trainable, step.adamw);

  auto end_clients = [&] {
    Message done;
    done.meta = {{"kind", "done"}};
    const std::string bytes = encode_message(done);
    for (int r = 1; r < world->size(); ++r) world->send_bytes(bytes, r);
  };
  const std::string ckpt_path = o.lm.run.dir + "/checkpoint.h5";
  int64_t start_round = 0;
  RoundTotals all;
  double wall_total = 0, base_val_loss = 0;
  AdamW* server_optimizer = centralized ? centralized_optimizer.get() : shared_server ? &shared_server->optimizer() : nullptr;
  if (resume) {
    // The checkpoint: device./server./model. weights (and the relayed moments), the persistent AdamW's moments.
    const ServerCheckpoint ckpt = load_server_checkpoint(ckpt_path);
    const auto extra = nlohmann::json::parse(ckpt.extra);
    start_round = ckpt.round;
    try {
      if (centralized) {
        const TensorMap weights = with_prefix(ckpt.global, "model.");
        torch::NoGradGuard no_grad;
        for (auto& [name, p] : all_trainable) {
          if (!weights.count(name)) throw Error("no weights for " + name);
          p.copy_(weights.at(name));
        }
      } else {
        server_global = with_prefix(ckpt.global, "server.");
        load_side_weights(view, SplitSide::server, server_global);
        const TensorMap device_part = with_prefix(ckpt.global, "device.");
        if (relays(scheme)) {
          relay_state.tensors = device_part;
          relay_state.meta["adamw_steps"] = extra.at("relay_adamw_steps");
          unpack_device_state(relay_state, view, nullptr, ckpt_path);
          device_global = side_weights(view, SplitSide::device);
        } else {
          device_global = device_part;
        }
      }
      if (server_optimizer) load_adamw_moments(*server_optimizer, ckpt.optimizer_state, ckpt.optimizer_rounds, ckpt_path);
    } catch (const Error& e) {
      throw FormatError(ckpt_path + " does not fit this run (" + e.what() + "): it belongs to another model or scheme");
    }
    all.load(extra.at("totals"));
    wall_total = extra.at("wall_s");
    base_val_loss = extra.at("base_val_loss");
    log_info("resuming ", ckpt_path, " after round ", start_round);
  }
  MetricsWriter metrics(o.lm.run.dir + "/metrics.jsonl", /*truncate=*/!resume);
  nlohmann::json eval;
  auto evaluate = [&](int64_t round) {
    if (!centralized) load_side_weights(view, SplitSide::device, device_global);
    eval = evaluate_clients(model, device, clients, /*bf16=*/false);
    eval["event"] = "eval";
    eval["round"] = round;
    metrics.write(eval);
    log_info("round ", round, ": held-out perplexity ", eval["val_ppl"].get<double>());
  };
  if (start_round == 0) {
    evaluate(0);
    base_val_loss = eval["val_loss"];
  }

  for (int64_t round = start_round; round < o.fed.rounds; ++round) {
    const auto t0 = Clock::now();
    RoundTotals r;
    std::vector<std::pair<TensorMap, double>> device_parts, server_parts;
    for (const int64_t c : turn_order(num_clients, per_round, seed, round)) {
      const auto i = static_cast<size_t>(c);
      const int64_t steps = clients.roster.local_steps[i];
      const double weight = static_cast<double>(clients.roster.samples[i]);
      double turn_s = 0;
      SessionTally tally;
      seed_turn(seed, round, c);
      if (centralized) {
        // The baseline: the client's batches, uploaded as token ids, train the whole model here.
        TokenDataset& data = clients.datasets[i];
        const int64_t consumed = round * steps;
        data.seek({consumed / data.batches_per_epoch(), consumed % data.batches_per_epoch()});
        model->train();
        for (int64_t s = 0; s < steps; ++s) {
          const Batch b = data.next_batch();
          centralized_optimizer->zero_grad();
          const auto loss = next_token_loss(model->forward(b.input_ids.to(device)), b.targets.to(device));
          loss.backward();
          centralized_optimizer->step(lr);
          tally.loss_sum += loss.item<double>();
          ++tally.loss_steps, ++tally.steps;
          tally.tokens += b.targets.numel();
          tally.bytes_up += (b.input_ids.numel() + b.input_ids.size(0)) * 4;  // each window's tokens, int32
          ++tally.messages_up;
        }
        turn_s = static_cast<double>(tally.tokens) / o.split.server_tokens_per_s +
                 (link ? transfer_seconds(*link, tally.bytes_up, tally.messages_up, true) : 0.0);
      } else {
        Message turn = relays(scheme) ? relay_state : Message{};
        if (!relays(scheme)) turn.tensors = device_global;
        turn.meta.update({{"kind", "turn"}, {"client", c}, {"round", round}});  // keeps the relayed AdamW step count
        const std::string turn_bytes = encode_message(turn);
        std::unique_ptr<SplitServer> own_server;
        if (per_client_server) {
          load_side_weights(view, SplitSide::server, server_global);
          own_server = std::make_unique<SplitServer>(model, step);
        }
        SplitServer& server = per_client_server ? *own_server : *shared_server;
        const int host = host_rank(c, world->size());
        std::string up_bytes;
        if (host == 0) {
          // One process: the device end runs on a thread of its own, joined to this one in memory.
          auto [device_end, server_end] = local_channel_pair(o.fed.comm_timeout_s);
          SplitOptions options = step;
          options.noise.seed = client_seed(seed, round, c) ^ 0x5EEDull;
          SplitDevice device_part(model, options);
          AdamW* moments = relays(scheme) ? &device_part.optimizer() : nullptr;
          unpack_device_state(turn, view, moments, "rank 0");
          SessionTally device_tally;
          std::exception_ptr failure;
          std::thread device_thread([&] {
            set_cpu_threads(o.lm.run.threads);  // per thread: a new thread would use every core, summing in another order
            try {
              device_tally = run_device_session(device_part, *device_end, clients.datasets[i], round, steps, lr);
            } catch (...) {
              failure = std::current_exception();
            }
          });
          try {
            tally = run_server_session(server, *server_end, steps, lr);
          } catch (...) {
            device_thread.join();
            throw;
          }
          device_thread.join();
          if (failure) std::rethrow_exception(failure);
          Message up = pack_device_state(view, moments);
          up.meta.update({{"kind", "state"}, {"client", c}, {"tally", device_tally.to_json()}});
          up_bytes = encode_message(up);
        } else {
          world->send_bytes(turn_bytes, host);
          WorldChannel device_end(*world, host);
          tally = run_server_session(server, device_end, steps, lr);
          up_bytes = world->recv_bytes(host);
        }
        const Message up = decode_message(up_bytes, "client " + clients.roster.names[i] + " on rank " + std::to_string(host));
        tally.merge_loss(SessionTally::from_json(up.meta.at("tally")));
        r.weights_down += static_cast<int64_t>(turn_bytes.size());
        r.weights_up += static_cast<int64_t>(up_bytes.size());
        if (relays(scheme)) relay_state = up;
        else device_parts.emplace_back(up.tensors, weight);
        if (per_client_server) server_parts.emplace_back(side_weights(view, SplitSide::server), weight);
        const double tokens = static_cast<double>(tally.tokens);
        turn_s = tokens * device_share / clients.roster.speeds[i] + tokens * server_share / o.split.server_tokens_per_s +
                 (link ? transfer_seconds(*link, tally.bytes_up + static_cast<int64_t>(up_bytes.size()), tally.messages_up + 1, true) +
                             transfer_seconds(*link, tally.bytes_down + static_cast<int64_t>(turn_bytes.size()), tally.messages_down + 1, false)
                       : 0.0);
      }
      r.loss_sum += tally.loss_sum;
      r.loss_steps += tally.loss_steps;
      r.steps += tally.steps;
      r.tokens += tally.tokens;
      r.cut_up += tally.bytes_up;
      r.cut_down += tally.bytes_down;
      // SplitFed V1 serves its clients in parallel (a server part each); the other schemes in turn.
      r.sim_s = per_client_server ? std::max(r.sim_s, turn_s) : r.sim_s + turn_s;
    }
    if (!device_parts.empty()) device_global = weighted_mean(device_parts);
    if (relays(scheme)) {
      unpack_device_state(relay_state, view, nullptr, "the last client");
      device_global = side_weights(view, SplitSide::device);
    }
    if (!server_parts.empty()) {
      server_global = weighted_mean(server_parts);
      load_side_weights(view, SplitSide::server, server_global);
    }
    const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
    wall_total += wall;
    all.sim_s += r.sim_s;
    all.cut_up += r.cut_up, all.cut_down += r.cut_down, all.weights_up += r.weights_up, all.weights_down += r.weights_down;
    all.steps += r.steps, all.tokens += r.tokens;
    const double train_loss = r.loss_steps > 0 ? r.loss_sum / static_cast<double>(r.loss_steps) : std::nan("");
    metrics.write({{"event", "round"}, {"round", round + 1}, {"train_loss", train_loss}, {"steps", r.steps}, {"tokens", r.tokens},
                   {"cut_bytes_up", r.cut_up}, {"cut_bytes_down", r.cut_down},
                   {"cut_bytes_per_step", r.steps > 0 ? (r.cut_up + r.cut_down) / r.steps : 0}, {"weight_bytes_up", r.weights_up},
                   {"weight_bytes_down", r.weights_down}, {"bytes_up", r.cut_up + r.weights_up},
                   {"bytes_down", r.cut_down + r.weights_down}, {"sim_round_s", r.sim_s}, {"wall_s", wall},
                   {"sim_elapsed_s", all.sim_s}, {"elapsed_wall_s", wall_total}});
    log_info("round ", round + 1, "/", o.fed.rounds, ": train loss ", train_loss, ", ", r.cut_up + r.weights_up, " bytes up, ",
             r.cut_down + r.weights_down, " bytes down, ", wall, " s");
    const bool last = round + 1 == o.fed.rounds;
    if (last || (round + 1) % o.fed.eval_every == 0) evaluate(round + 1);

    ServerCheckpoint ckpt;
    ckpt.round = round + 1;
    ckpt.recipe = recipe_ini;
    if (centralized) {
      for (const auto& [name, p] : all_trainable) ckpt.global["model." + name] = p.detach().to(torch::kCPU);
    } else {
      for (const auto& [name, t] : relays(scheme) ? relay_state.tensors : device_global) ckpt.global["device." + name] = t;
      for (const auto& [name, t] : side_weights(view, SplitSide::server)) ckpt.global["server." + name] = t;
    }
    if (server_optimizer) {
      ckpt.optimizer_state = adamw_moments(*server_optimizer);
      ckpt.optimizer_rounds = server_optimizer->steps_taken();
    }
    ckpt.extra = nlohmann::json{{"totals", all.to_json()}, {"wall_s", wall_total}, {"base_val_loss", base_val_loss},
                                {"relay_adamw_steps", relay_state.meta.value("adamw_steps", int64_t{0})}}.dump();
    save_server_checkpoint(ckpt_path, ckpt);
    if (o.lm.run.stop_after > 0 && round + 1 >= o.lm.run.stop_after && !last) {
      log_info("stopped after round ", round + 1, " (run.stop_after): continue with --resume");
      end_clients();
      return {round + 1, eval.value("val_loss", std::nan(""))};
    }
  }
  if (start_round >= o.fed.rounds) {
    log_info("the checkpoint is already at round ", start_round, ": nothing to do");
    evaluate(o.fed.rounds);
  }
  end_clients();

  nlohmann::json summary{{"scheme", scheme}, {"cut", step.cut.cut}, {"tail_cut", step.cut.tail_cut}, {"codec", o.split.codec},
                         {"gradient_codec", o.split.gradient_codec}, {"noise_sigma", o.split.noise_sigma},
                         {"rounds", o.fed.rounds}, {"clients", num_clients}, {"clients_per_round", per_round},
                         {"world_size", world->size()}, {"val_loss", eval["val_loss"]}, {"val_ppl", eval["val_ppl"]},
                         {"client_ppl", eval["client_ppl"]}, {"base_val_loss", base_val_loss}, {"base_val_ppl", std::exp(base_val_loss)},
                         {"steps", all.steps}, {"tokens", all.tokens}, {"cut_bytes_up", all.cut_up}, {"cut_bytes_down", all.cut_down},
                         {"weight_bytes_up", all.weights_up}, {"weight_bytes_down", all.weights_down},
                         {"bytes_up", all.cut_up + all.weights_up}, {"bytes_down", all.cut_down + all.weights_down},
                         {"device_compute_share", device_share}, {"sim_elapsed_s", all.sim_s}, {"elapsed_wall_s", wall_total},
                         {"trainable_parameters", trainable_count(*model)}, {"peak_host_memory_bytes", peak_host_memory_bytes()}};
  model->to(torch::kCPU);
  if (adaptation) {
    adaptation->save(model, o.lm.run.dir + "/adapter");
    log_info("saved the adapter to ", o.lm.run.dir, "/adapter (use it with --model ", o.lm.model.init, ")");
  } else {
    const std::string out = o.lm.run.dir + "/model";
    make_dirs(out);
    save_hf_model(model, out);
    copy_tokenizer(tokenizer, out);
    log_info("saved the model and tokenizer to ", out);
  }
  write_text_atomically(o.lm.run.dir + "/summary.json", summary.dump(2) + "\n");
  return {o.fed.rounds, eval["val_loss"].get<double>()};
}

}  // namespace fedsplit
