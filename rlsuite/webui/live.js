// Keeps /rlsuite current: swaps in the server-rendered fragment (same renderer as the HTML report), so the page
// needs no charting library and loads nothing but its own routes.
(function () {
  const main = document.getElementById("rlsuite-live");
  const url = main.dataset.fragment;

  function delay() {
    // poll fast while a run is going, slowly otherwise (a new run may start from Locust's form at any time)
    const running = main.querySelector("[data-running='true']") !== null;
    return running ? 2000 : 5000;
  }

  async function refresh() {
    try {
      const response = await fetch(url, { cache: "no-store", credentials: "same-origin" });
      if (response.ok) {
        main.innerHTML = await response.text();
      }
    } catch (e) {
      // Locust stopped or the network blinked: keep the last view, the next tick tries again
    }
    setTimeout(refresh, delay());
  }

  setTimeout(refresh, delay());
})();
