// tools/examples/example.cpp — embedding libmoe from C++ through the RAII wrapper (moe/moe.hpp):
// a two-turn chat with the model's template, then a generation cancelled from another thread.
//   moe_example_cpp MODEL
// Exit status 0 on success, 1 on failure.
#include <moe/moe.hpp>

#include <atomic>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>
#include <thread>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: " << argv[0] << " MODEL\n";
    return 2;
  }
  try {
    moe_model_params mp = moe_model_default_params();
    mp.n_ctx = 512;
    moe::api::Model model(argv[1], mp, [](float) { return true; });
    moe_session_params sp = moe_session_default_params();
    sp.sampling.seed = 1234;
    moe::api::Session session(model, sp);

    moe::api::GenerateOptions o;
    o.n_predict = 8;
    std::vector<moe::api::Message> chat = {{"system", "You are terse."}, {"user", "Hello!"}};
    for (const char* next : {static_cast<const char*>("Tell me more."), static_cast<const char*>(nullptr)}) {
      std::string reply;
      session.chat(chat, [&](std::string_view text, int32_t) {
        reply.append(text);
        std::cout << text << std::flush;
        return true;
      }, o);
      const moe_session_stats st = session.stats();
      std::cout << "\n[" << st.last_generated_tokens << " tokens, " << st.last_reused_tokens
                << " prompt tokens reused from the KV cache]\n";
      chat.push_back({"assistant", reply});
      if (next) chat.push_back({"user", next});
    }

    // Cancellation from another thread.
    session.reset();
    std::atomic<int> seen{0};
    std::thread canceller([&] {
      while (seen.load() < 3) std::this_thread::yield();
      session.cancel();
    });
    moe::api::GenerateOptions endless;
    endless.ignore_eog = true;
    const moe_stop_reason why = session.generate("Count:", [&](std::string_view, int32_t t) {
      if (t >= 0) seen.fetch_add(1);
      return true;
    }, endless);
    canceller.join();
    std::cout << "cancelled after " << session.stats().last_generated_tokens << " tokens\n";
    if (why != MOE_STOP_CANCELLED) {
      std::cerr << "expected a cancelled generation\n";
      return 1;
    }
  } catch (const moe::api::Error& e) {
    std::cerr << "error (" << moe_status_string(e.status()) << "): " << e.what() << "\n";
    return 1;
  }
  return 0;
}
