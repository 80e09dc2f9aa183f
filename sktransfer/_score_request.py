"""The request of a scorer that consumes one metadata parameter, as scikit-learn's ``set_score_request`` sets it."""

from sklearn import get_config
from sklearn.utils.metadata_routing import UNCHANGED, MetadataRequest


class OneParameterScoreRequest:
    """``get_metadata_routing`` for a scorer that consumes ``_routed_param`` when scored, and its update.

    A scorer's ``set_score_request(*, <param>=UNCHANGED)`` calls :meth:`_update_request`; routing asks a
    consumer for nothing but ``get_metadata_routing``. The request (an alias, or True, False, None) lives in
    the attribute ``_<param>_request``, ``_default_request`` until set.
    """

    _routed_param = None
    _default_request = None

    def get_metadata_routing(self):
        """The metadata this scorer consumes when it scores.

        Returns
        -------
        request : sklearn.utils.metadata_routing.MetadataRequest
        """
        return self._request(getattr(self, f"_{self._routed_param}_request", self._default_request))

    def _update_request(self, alias):
        if not get_config()["enable_metadata_routing"]:
            raise RuntimeError(
                "set_score_request is only available when metadata routing is enabled: "
                "sklearn.set_config(enable_metadata_routing=True)."
            )
        if alias is not UNCHANGED:
            self._request(alias)  # refuses an invalid alias now rather than during a search
            setattr(self, f"_{self._routed_param}_request", alias)
        return self

    def _request(self, alias):
        request = MetadataRequest(owner=repr(self))
        request.score.add_request(param=self._routed_param, alias=alias)
        return request
