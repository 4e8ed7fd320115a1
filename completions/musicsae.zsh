
#compdef musicsae

_musicsae_completion() {
  eval $(env _TYPER_COMPLETE_ARGS="${words[1,$CURRENT]}" _MUSICSAE_COMPLETE=complete_zsh musicsae)
}

compdef _musicsae_completion musicsae

